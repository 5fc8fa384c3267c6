//! Socket.IO protocol v5 packets.
//!
//! A packet is written `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`: the type a
//! digit (`0` CONNECT, `1` DISCONNECT, `2` EVENT, `3` ACK, `4` CONNECT_ERROR, `5`
//! BINARY_EVENT, `6` BINARY_ACK), the attachment count only for the binary types, the
//! namespace only when it is not `/`. A binary packet is followed by its attachments, one
//! binary Engine.IO message each, which the JSON refers to as
//! `{"_placeholder":true,"num":<index>}`.
//!
//! JSON is kept as the client wrote it ([`RawValue`]), made compact: key order and numbers
//! are never changed by a round trip.

use bytes::Bytes;
use serde_json::value::RawValue;
use std::fmt::Write as _;

/// The packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum PacketType {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl PacketType {
    fn from_digit(b: u8) -> Option<Self> {
        Some(match b {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    fn digit(self) -> char {
        match self {
            Self::Connect => '0',
            Self::Disconnect => '1',
            Self::Event => '2',
            Self::Ack => '3',
            Self::ConnectError => '4',
            Self::BinaryEvent => '5',
            Self::BinaryAck => '6',
        }
    }

    /// Whether attachments follow a packet of this type.
    pub fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// One Socket.IO packet, with its attachments.
#[derive(Debug, Clone)]
pub struct Packet {
    /// The type.
    pub kind: PacketType,
    /// The namespace (`/` when the packet names none).
    pub nsp: String,
    /// The acknowledgement id.
    pub id: Option<u64>,
    /// The JSON data, compact.
    pub data: Option<Box<RawValue>>,
    /// The binary attachments (binary types only).
    pub attachments: Vec<Bytes>,
}

impl PartialEq for Packet {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.nsp == other.nsp
            && self.id == other.id
            && self.data.as_ref().map(|d| d.get()) == other.data.as_ref().map(|d| d.get())
            && self.attachments == other.attachments
    }
}

/// Why a packet is refused: the connection is closed for any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// A type that is not 0-6.
    #[error("unknown packet type")]
    UnknownType,
    /// A binary type without `<count>-`, or a count over the limit.
    #[error("illegal attachments")]
    Attachments,
    /// A namespace that is not followed by `,` and data or the end.
    #[error("invalid namespace")]
    Namespace,
    /// An ack id that is not a number, or too large.
    #[error("invalid ack id")]
    AckId,
    /// Data that is not JSON, or not what the type allows.
    #[error("invalid payload")]
    Payload,
    /// Text arrived while attachments were awaited, or binary when none were.
    #[error("unexpected {0} message")]
    Unexpected(&'static str),
    /// A placeholder whose index is not one of the attachments.
    #[error("invalid placeholder")]
    Placeholder,
}

/// Events a client may not emit: the names the API uses itself.
pub const RESERVED_EVENTS: [&str; 6] =
    ["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"];

impl Packet {
    /// A packet of `kind` on `nsp` with `data`.
    pub fn new(kind: PacketType, nsp: &str, data: Option<Box<RawValue>>) -> Self {
        Self { kind, nsp: nsp.to_owned(), id: None, data, attachments: Vec::new() }
    }

    /// CONNECT_ERROR on `nsp`: `{"message": …}`, with `data` when given (as socket.io's
    /// `err.data`).
    pub fn connect_error(nsp: &str, message: &str, data: Option<serde_json::Value>) -> Self {
        let body = match data {
            Some(data) => serde_json::json!({ "message": message, "data": data }),
            None => serde_json::json!({ "message": message }),
        };
        Self::new(PacketType::ConnectError, nsp, RawValue::from_string(body.to_string()).ok())
    }

    /// The text form; the attachments go after it, one binary message each.
    pub fn encode(&self) -> String {
        let data = self.data.as_ref().map_or("", |d| d.get());
        let mut out = String::with_capacity(8 + self.nsp.len() + data.len());
        out.push(self.kind.digit());
        if self.kind.is_binary() {
            let _ = write!(out, "{}-", self.attachments.len());
        }
        if self.nsp != "/" {
            out.push_str(&self.nsp);
            out.push(',');
        }
        if let Some(id) = self.id {
            let _ = write!(out, "{id}");
        }
        out.push_str(data);
        out
    }

    /// Reads the text form. A binary packet comes back with its count of attachments to
    /// await ([`Decoder`] collects them).
    ///
    /// # Errors
    ///
    /// A [`ParseError`] for anything the protocol does not allow.
    pub fn decode(text: &str, max_attachments: usize) -> Result<(Self, usize), ParseError> {
        let bytes = text.as_bytes();
        let kind = bytes.first().and_then(|&b| PacketType::from_digit(b)).ok_or(ParseError::UnknownType)?;
        let mut i = 1;
        let mut expected = 0;
        if kind.is_binary() {
            let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 || bytes.get(i + digits) != Some(&b'-') {
                return Err(ParseError::Attachments);
            }
            expected = text[i..i + digits].parse::<usize>().map_err(|_| ParseError::Attachments)?;
            if expected > max_attachments {
                return Err(ParseError::Attachments);
            }
            i += digits + 1;
        }
        let mut nsp = "/";
        if bytes.get(i) == Some(&b'/') {
            let end = bytes[i..].iter().position(|&b| b == b',').map_or(bytes.len(), |p| i + p);
            nsp = &text[i..end];
            i = (end + 1).min(bytes.len());
        }
        let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        let id = if digits > 0 {
            let id = text[i..i + digits].parse::<u64>().map_err(|_| ParseError::AckId)?;
            i += digits;
            Some(id)
        } else {
            None
        };
        let data = if i < bytes.len() {
            let raw: &RawValue = serde_json::from_str(&text[i..]).map_err(|_| ParseError::Payload)?;
            Some(compact(raw))
        } else {
            None
        };
        if !payload_valid(kind, data.as_deref()) {
            return Err(ParseError::Payload);
        }
        if kind.is_binary() {
            let max = data.as_deref().map_or(Ok(None), max_placeholder)?;
            if max.is_some_and(|m| m >= expected) {
                return Err(ParseError::Placeholder);
            }
        }
        Ok((
            Self { kind, nsp: nsp.to_owned(), id, data, attachments: Vec::with_capacity(expected) },
            expected,
        ))
    }
}

/// What each type may carry (socket.io-parser's rules): CONNECT an object or nothing,
/// DISCONNECT nothing, CONNECT_ERROR a string or an object, an event an array that starts
/// with a name that is not reserved (or a number), an ack an array.
fn payload_valid(kind: PacketType, data: Option<&RawValue>) -> bool {
    let first = data.map(|d| d.get().as_bytes().first().copied().unwrap_or(b' '));
    match kind {
        PacketType::Connect => matches!(first, None | Some(b'{')),
        PacketType::Disconnect => first.is_none(),
        PacketType::ConnectError => matches!(first, Some(b'{' | b'"')),
        PacketType::Ack | PacketType::BinaryAck => first == Some(b'['),
        PacketType::Event | PacketType::BinaryEvent => {
            let Some(data) = data else { return false };
            let Ok(args) = serde_json::from_str::<Vec<&RawValue>>(data.get()) else { return false };
            match args.first().map(|a| a.get()) {
                Some(name) if name.starts_with('"') => {
                    serde_json::from_str::<String>(name).is_ok_and(|n| !RESERVED_EVENTS.contains(&n.as_str()))
                }
                Some(name) => serde_json::from_str::<f64>(name).is_ok(),
                None => false,
            }
        }
    }
}

/// The largest placeholder index in `data`, checking that every placeholder is well formed.
fn max_placeholder(data: &RawValue) -> Result<Option<usize>, ParseError> {
    fn walk(v: &serde_json::Value, max: &mut Option<usize>) -> Result<(), ParseError> {
        match v {
            serde_json::Value::Array(a) => a.iter().try_for_each(|v| walk(v, max)),
            serde_json::Value::Object(o) => {
                if o.get("_placeholder") == Some(&serde_json::Value::Bool(true)) {
                    let n =
                        o.get("num").and_then(serde_json::Value::as_u64).ok_or(ParseError::Placeholder)?;
                    let n = usize::try_from(n).map_err(|_| ParseError::Placeholder)?;
                    *max = Some(max.map_or(n, |m| m.max(n)));
                    return Ok(());
                }
                o.values().try_for_each(|v| walk(v, max))
            }
            _ => Ok(()),
        }
    }
    // Most packets have no placeholder at all: skip the parse then.
    if !data.get().contains("_placeholder") {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_str(data.get()).map_err(|_| ParseError::Payload)?;
    let mut max = None;
    walk(&v, &mut max)?;
    Ok(max)
}

/// `raw` without the whitespace between tokens (JSON.stringify's form).
pub fn compact(raw: &RawValue) -> Box<RawValue> {
    let s = raw.get();
    if !s.bytes().any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t')) {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in s.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\n' | '\r' | '\t') {
            out.push(c);
        }
    }
    // Removing insignificant whitespace from valid JSON leaves valid JSON.
    RawValue::from_string(out).unwrap_or_else(|_| raw.to_owned())
}

/// Reassembles packets from Engine.IO messages: a binary packet is complete when its
/// attachments have arrived.
#[derive(Debug)]
pub struct Decoder {
    max_attachments: usize,
    pending: Option<(Packet, usize)>,
}

impl Decoder {
    /// A decoder that refuses packets with more than `max_attachments` attachments.
    pub fn new(max_attachments: usize) -> Self {
        Self { max_attachments, pending: None }
    }

    /// A text message: a packet, or `None` while its attachments are awaited.
    ///
    /// # Errors
    ///
    /// A [`ParseError`]; text while attachments are awaited is one.
    pub fn text(&mut self, text: &str) -> Result<Option<Packet>, ParseError> {
        if self.pending.is_some() {
            return Err(ParseError::Unexpected("text"));
        }
        let (packet, expected) = Packet::decode(text, self.max_attachments)?;
        if expected == 0 {
            return Ok(Some(packet));
        }
        self.pending = Some((packet, expected));
        Ok(None)
    }

    /// An Engine.IO message, text or binary: a packet, or `None` while attachments are
    /// awaited.
    ///
    /// # Errors
    ///
    /// As [`text`](Self::text) and [`binary`](Self::binary).
    pub fn feed(&mut self, data: crate::engine::packet::Data) -> Result<Option<Packet>, ParseError> {
        match data {
            crate::engine::packet::Data::Text(t) => self.text(&t),
            crate::engine::packet::Data::Binary(b) => self.binary(b),
        }
    }

    /// A binary message: the next attachment of the packet being reassembled.
    ///
    /// # Errors
    ///
    /// [`ParseError::Unexpected`] when no attachment is awaited.
    pub fn binary(&mut self, data: Bytes) -> Result<Option<Packet>, ParseError> {
        let Some((packet, expected)) = self.pending.as_mut() else {
            return Err(ParseError::Unexpected("binary"));
        };
        packet.attachments.push(data);
        if packet.attachments.len() < *expected {
            return Ok(None);
        }
        Ok(self.pending.take().map(|(p, _)| p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(text: &str) -> Result<Packet, ParseError> {
        let mut d = Decoder::new(10);
        d.text(text).map(|p| p.expect("complete"))
    }

    fn raw(s: &str) -> Option<Box<RawValue>> {
        Some(RawValue::from_string(s.to_owned()).unwrap())
    }

    #[test]
    fn reads_the_protocol_examples() {
        let p = decode("0").unwrap();
        assert_eq!((p.kind, p.nsp.as_str(), p.id, p.data.is_none()), (PacketType::Connect, "/", None, true));
        let p = decode("0/admin,{\"token\":\"123\"}").unwrap();
        assert_eq!((p.nsp.as_str(), p.data.unwrap().get()), ("/admin", "{\"token\":\"123\"}"));
        assert_eq!(decode("40").err(), Some(ParseError::Payload), "CONNECT_ERROR needs data");
        let p = decode("0/random").unwrap();
        assert_eq!(p.nsp, "/random");
        let p = decode("1/admin,").unwrap();
        assert_eq!((p.kind, p.nsp.as_str()), (PacketType::Disconnect, "/admin"));
        let p = decode("2[\"foo\"]").unwrap();
        assert_eq!((p.kind, p.data.unwrap().get()), (PacketType::Event, "[\"foo\"]"));
        let p = decode("2/admin,456[\"project:delete\",123]").unwrap();
        assert_eq!((p.nsp.as_str(), p.id), ("/admin", Some(456)));
        let p = decode("3/admin,456[]").unwrap();
        assert_eq!((p.kind, p.id, p.data.unwrap().get()), (PacketType::Ack, Some(456), "[]"));
        let p = decode("4{\"message\":\"Not authorized\"}").unwrap();
        assert_eq!(p.kind, PacketType::ConnectError);
        let p = decode("2[ \"a\" , { \"k\" : \"x y\" , \"b\": 1.50 } ]").unwrap();
        assert_eq!(
            p.data.unwrap().get(),
            "[\"a\",{\"k\":\"x y\",\"b\":1.50}]",
            "compact, order and numbers kept"
        );
    }

    #[test]
    fn refuses_what_the_protocol_does_not_allow() {
        assert_eq!(decode("abc").err(), Some(ParseError::UnknownType));
        assert_eq!(decode("").err(), Some(ParseError::UnknownType));
        assert_eq!(decode("7").err(), Some(ParseError::UnknownType));
        assert_eq!(decode("2{}").err(), Some(ParseError::Payload), "an event is an array");
        assert_eq!(decode("2[]").err(), Some(ParseError::Payload), "with a name");
        assert_eq!(decode("2[{}]").err(), Some(ParseError::Payload));
        assert_eq!(decode("2[\"disconnect\"]").err(), Some(ParseError::Payload), "reserved");
        assert!(decode("2[1,2]").is_ok(), "a number is a name too");
        assert_eq!(decode("2abc[\"a\"]").err(), Some(ParseError::Payload), "a bad ack id is bad JSON");
        assert_eq!(decode("299999999999999999999999[\"a\"]").err(), Some(ParseError::AckId));
        assert_eq!(decode("1{}").err(), Some(ParseError::Payload));
        assert_eq!(decode("0[]").err(), Some(ParseError::Payload));
        assert_eq!(decode("3{}").err(), Some(ParseError::Payload));
        assert_eq!(decode("5[\"a\"]").err(), Some(ParseError::Attachments));
        assert_eq!(decode("511-[\"a\"]").err(), Some(ParseError::Attachments), "over the limit");
        assert_eq!(
            decode("51-[\"a\",{\"_placeholder\":true,\"num\":1}]").err(),
            Some(ParseError::Placeholder)
        );
        assert_eq!(decode("51-[\"a\",{\"_placeholder\":true}]").err(), Some(ParseError::Placeholder));
        assert_eq!(decode("2[\"a\"] x").err(), Some(ParseError::Payload));
    }

    #[test]
    fn reassembles_attachments() {
        let mut d = Decoder::new(10);
        let head = "52-[\"message\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]";
        assert_eq!(d.text(head), Ok(None));
        assert_eq!(d.text("2[\"x\"]"), Err(ParseError::Unexpected("text")));
        let mut d = Decoder::new(10);
        assert_eq!(d.text(head), Ok(None));
        assert_eq!(d.binary(Bytes::from_static(&[1, 2, 3])), Ok(None));
        let p = d.binary(Bytes::from_static(&[4, 5, 6])).unwrap().unwrap();
        assert_eq!(p.attachments, vec![Bytes::from_static(&[1, 2, 3]), Bytes::from_static(&[4, 5, 6])]);
        assert_eq!(p.encode(), head);
        assert_eq!(d.binary(Bytes::new()), Err(ParseError::Unexpected("binary")));
        let p = decode("60-789[]").unwrap();
        assert_eq!((p.kind, p.id, p.encode()), (PacketType::BinaryAck, Some(789), "60-789[]".to_owned()));
    }

    #[test]
    fn writes_the_protocol_examples() {
        let mut p =
            Packet::new(PacketType::ConnectError, "/random", raw("{\"message\":\"Invalid namespace\"}"));
        assert_eq!(p.encode(), "4/random,{\"message\":\"Invalid namespace\"}");
        p = Packet::new(PacketType::Ack, "/", raw("[1]"));
        p.id = Some(12);
        assert_eq!(p.encode(), "312[1]");
        assert_eq!(Packet::new(PacketType::Disconnect, "/", None).encode(), "1");
    }

    fn json() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i32>().prop_map(|n| n.to_string()),
            any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec(("[a-z]{1,3}", inner), 0..4).prop_map(|v| {
                    let fields: Vec<String> = v.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    fn packet() -> impl Strategy<Value = Packet> {
        let nsp = prop_oneof![Just("/".to_owned()), "/[a-z]{1,8}"];
        let id = proptest::option::of(any::<u64>());
        let args = proptest::collection::vec(json(), 0..3);
        let bins = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..3);
        (0..7u8, nsp, id, "[a-z]{1,6}", args, bins).prop_map(|(t, nsp, id, name, args, bins)| {
            let kind = PacketType::from_digit(b'0' + t).unwrap();
            let mut all = vec![format!("\"{name}\"")];
            all.extend(args.clone());
            let placeholders: Vec<String> =
                (0..bins.len()).map(|n| format!("{{\"_placeholder\":true,\"num\":{n}}}")).collect();
            all.extend(placeholders.clone());
            let (data, id) = match kind {
                PacketType::Connect => (Some("{\"token\":1}".to_owned()), None),
                PacketType::Disconnect => (None, None),
                PacketType::ConnectError => (Some("{\"message\":\"no\"}".to_owned()), None),
                PacketType::Event | PacketType::BinaryEvent => (Some(format!("[{}]", all.join(","))), id),
                PacketType::Ack | PacketType::BinaryAck => {
                    let mut rest = args;
                    rest.extend(placeholders);
                    (Some(format!("[{}]", rest.join(","))), id)
                }
            };
            let mut p = Packet::new(kind, &nsp, data.map(|d| RawValue::from_string(d).unwrap()));
            p.id = id;
            if kind.is_binary() {
                p.attachments = bins.into_iter().map(Bytes::from).collect();
            }
            p
        })
    }

    proptest! {
        #[test]
        fn round_trip(p in packet()) {
            let mut d = Decoder::new(10);
            let mut got = d.text(&p.encode()).unwrap();
            for a in &p.attachments {
                prop_assert!(got.is_none());
                got = d.binary(a.clone()).unwrap();
            }
            prop_assert_eq!(got.unwrap(), p);
        }

        #[test]
        fn any_text_is_an_answer_not_a_panic(s in any::<String>()) {
            let _ = Decoder::new(10).text(&s);
        }

        #[test]
        fn every_split_point_of_an_event(p in packet(), cut in any::<usize>()) {
            // A packet cut anywhere before its end is refused or read as something shorter,
            // never a panic (a prefix of UTF-8 is cut on a char boundary).
            let text = p.encode();
            let mut cut = cut % (text.len() + 1);
            while !text.is_char_boundary(cut) { cut -= 1; }
            let _ = Decoder::new(10).text(&text[..cut]);
        }
    }
}

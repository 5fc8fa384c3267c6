//! What the Redis broker writes and reads: publisher infos, Pub/Sub payloads, and the
//! shapes of RESP values.

use crate::broker::BrokerEvents;
use crate::hub::event::{ClientInfo, Publication};
use bytes::Bytes;
use redis::Value;
use std::sync::Arc;
use std::time::Duration;

/// A message from the channel's Pub/Sub stream.
#[derive(Debug)]
pub(super) enum Remote {
    /// A publication with its place in the channel.
    Publication { epoch: Arc<str>, offset: u64, info: Option<Arc<ClientInfo>>, data: Bytes },
    /// A client subscribed on some node.
    Join(Arc<ClientInfo>),
    /// A client left on some node.
    Leave(Arc<ClientInfo>),
}

impl Remote {
    /// Hands the message to the hub's local fan-out.
    pub(super) fn hand_to(self, events: &dyn BrokerEvents, channel: &str) {
        match self {
            Remote::Publication { epoch, offset, info, data } => {
                events.publication(channel, Publication { offset, epoch, data, info });
            }
            Remote::Join(info) => events.join(channel, info),
            Remote::Leave(info) => events.leave(channel, info),
        }
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

pub(crate) fn as_array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

pub(crate) fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

pub(crate) fn as_str(v: &Value) -> Option<&str> {
    as_bytes(v).and_then(|b| std::str::from_utf8(b).ok())
}

pub(super) fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => as_str(other)?.parse().ok(),
    }
}

/// A publisher as stored and sent: `client\nuser` for an authenticated user, `client\ruser`
/// for an anonymous one, empty for none (client ids hold neither character; user names may
/// hold anything).
pub(super) fn encode_info(info: Option<&ClientInfo>) -> Vec<u8> {
    match info {
        Some(i) => {
            let sep: &[u8] = if i.anonymous { b"\r" } else { b"\n" };
            [i.client.as_bytes(), sep, i.user.as_bytes()].concat()
        }
        None => Vec::new(),
    }
}

pub(super) fn decode_info(b: &[u8]) -> Option<Arc<ClientInfo>> {
    let s = std::str::from_utf8(b).ok()?;
    let at = s.find(['\n', '\r'])?;
    let (client, user) = (&s[..at], &s[at + 1..]);
    let anonymous = s.as_bytes()[at] == b'\r';
    Some(Arc::new(ClientInfo { client: client.into(), user: user.into(), anonymous }))
}

/// Decodes a Pub/Sub payload: `p<offset> <epoch> <info length> <info><data>`, `j<info>` or
/// `l<info>`.
pub(super) fn decode_remote(payload: &[u8]) -> Option<Remote> {
    let (&kind, rest) = payload.split_first()?;
    match kind {
        b'p' => {
            let mut fields = rest.splitn(3, |b| *b == b' ');
            let offset = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
            let epoch: Arc<str> = std::str::from_utf8(fields.next()?).ok()?.into();
            let rest = fields.next()?;
            let space = rest.iter().position(|b| *b == b' ')?;
            let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
            let body = &rest[space + 1..];
            if body.len() < len {
                return None;
            }
            let info = if len == 0 { None } else { Some(decode_info(&body[..len])?) };
            Some(Remote::Publication { epoch, offset, info, data: Bytes::copy_from_slice(&body[len..]) })
        }
        b'j' => Some(Remote::Join(decode_info(rest)?)),
        b'l' => Some(Remote::Leave(decode_info(rest)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubsub_payloads_decode() {
        let info = ClientInfo { client: "n1.c7".into(), user: "ann\nbob".into(), anonymous: false };
        let guest = ClientInfo { client: "n1.c8".into(), user: "ann\rbob".into(), anonymous: true };
        assert_eq!(decode_info(&encode_info(Some(&guest))).as_deref(), Some(&guest));
        assert_eq!(decode_info(&encode_info(Some(&info))).as_deref(), Some(&info));
        let i = encode_info(Some(&info));
        let mut p = format!("p42 ep0ch {} ", i.len()).into_bytes();
        p.extend_from_slice(&i);
        p.extend_from_slice(b"{\"x\": 1}");
        match decode_remote(&p) {
            Some(Remote::Publication { epoch, offset, info: Some(got), data }) => {
                assert_eq!((&*epoch, offset, &*got, &data[..]), ("ep0ch", 42, &info, &b"{\"x\": 1}"[..]));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode_remote(b"p1 e 0 data"), Some(Remote::Publication { info: None, .. })));
        assert!(matches!(decode_remote(b"jc1\nu"), Some(Remote::Join(_))));
        assert!(decode_remote(b"p1 e 99 short").is_none());
        assert!(decode_remote(b"x").is_none());
        assert!(decode_remote(b"").is_none());
    }
}

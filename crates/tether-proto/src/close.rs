//! Close codes (RFC 6455 7.4) and the close frame payload.

use std::fmt;

/// A close status code (RFC 6455 7.4), with named constants for the registered ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED: Self = Self(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: the connection closed without a close frame (never sent on the wire).
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: payload inconsistent with the message type (bad UTF-8).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: policy violation.
    pub const POLICY: Self = Self(1008);
    /// 1009: message too big.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: internal server error.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1015: TLS handshake failure (never sent on the wire).
    pub const TLS_HANDSHAKE: Self = Self(1015);

    /// Whether this code may appear in a close frame on the wire.
    ///
    /// RFC 6455 7.4.1/7.4.2: 1005, 1006 and 1015 are reserved for reporting and must never be
    /// sent; 0-999 are unused; 1004 and 1012-2999 are reserved for the protocol and its
    /// extensions (RFC 6455 defines none of 1012-1014, and Autobahn 7.9.x expects a strict
    /// endpoint to refuse them); 3000-4999 are for libraries, frameworks and applications.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

/// A close frame's status code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// Status code.
    pub code: CloseCode,
    /// UTF-8 reason, at most 123 bytes.
    pub reason: String,
}

/// Which side started the close handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// This endpoint sent the first close frame (or failed the connection).
    Local,
    /// The peer sent the first close frame (or dropped the connection).
    Remote,
}

/// How a connection ended: the event a clean or unclean close produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The code the peer sent (or we sent, when we failed the connection); 1005 when the close
    /// frame had no code, 1006 when the connection ended without a close handshake.
    pub code: CloseCode,
    /// The reason that came with the code.
    pub reason: String,
    /// Who started the close.
    pub initiator: Initiator,
    /// Whether both close frames were exchanged.
    pub clean: bool,
}

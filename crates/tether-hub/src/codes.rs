//! Every code a hub client can see, in one table: WebSocket close codes (4000-4999 are for
//! applications, RFC 6455 7.4.2) and the error codes of `tether.json` replies. Front-ends
//! map hub errors to their wire format from here; none defines a code of its own.
//! docs/PROTOCOL.md lists the same table.

use crate::hub::HubError;
use crate::session::auth::AuthError;

/// Close codes the hub sends.
pub mod close {
    /// The server is shutting down, or the connection was idle too long (RFC 6455).
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol error in the front-end's wire format (RFC 6455).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The peer broke a rule of the server (RFC 6455): a refused command.
    pub const POLICY: u16 = 1008;
    /// A message or frame over a size limit (RFC 6455).
    pub const TOO_BIG: u16 = 1009;
    /// The token is invalid.
    pub const INVALID_TOKEN: u16 = 4001;
    /// The token expired and was not refreshed in time.
    pub const TOKEN_EXPIRED: u16 = 4002;
    /// The connection fell behind: more than `max_queued_bytes` unsent.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// Disconnected through the server API.
    pub const DISCONNECTED: u16 = 4010;
    /// This node missed publications it cannot fill from history (after losing its
    /// connection to the broker): reconnect and resubscribe with recovery.
    pub const INSUFFICIENT_STATE: u16 = 4011;
    /// The peer stopped sending heart-beats (STOMP).
    pub const HEARTBEAT_TIMEOUT: u16 = 4012;
}

/// Error codes of `tether.json` replies.
pub mod reply {
    /// Something failed inside the server.
    pub const INTERNAL: u16 = 100;
    /// No `connect` yet, or a bad token.
    pub const UNAUTHORIZED: u16 = 101;
    /// The channel's namespace does not exist, or the name is empty or too long.
    pub const UNKNOWN_CHANNEL: u16 = 102;
    /// The namespace or the token does not allow this.
    pub const PERMISSION_DENIED: u16 = 103;
    /// No such command.
    pub const METHOD_NOT_FOUND: u16 = 104;
    /// Already subscribed.
    pub const ALREADY_SUBSCRIBED: u16 = 105;
    /// A limit was reached (channels per connection).
    pub const LIMIT_EXCEEDED: u16 = 106;
    /// The command is not valid JSON or misses a field.
    pub const BAD_REQUEST: u16 = 107;
    /// Not available in this namespace (presence or history off).
    pub const NOT_AVAILABLE: u16 = 108;
    /// The token has expired.
    pub const TOKEN_EXPIRED: u16 = 109;
    /// Not subscribed to the channel.
    pub const NOT_SUBSCRIBED: u16 = 110;
    /// `connect` sent twice.
    pub const ALREADY_CONNECTED: u16 = 111;
    /// The broker cannot be reached: nothing was done; try again later.
    pub const UNAVAILABLE: u16 = 112;
}

/// The reply code of a hub error.
pub fn reply_code(e: &HubError) -> u16 {
    match e {
        HubError::UnknownChannel => reply::UNKNOWN_CHANNEL,
        HubError::PermissionDenied => reply::PERMISSION_DENIED,
        HubError::AlreadySubscribed => reply::ALREADY_SUBSCRIBED,
        HubError::NotSubscribed => reply::NOT_SUBSCRIBED,
        HubError::LimitExceeded => reply::LIMIT_EXCEEDED,
        HubError::NotAvailable => reply::NOT_AVAILABLE,
        HubError::Unavailable => reply::UNAVAILABLE,
    }
}

/// The reply code of a refused token.
pub fn auth_code(e: &AuthError) -> u16 {
    if e.expired {
        reply::TOKEN_EXPIRED
    } else {
        reply::UNAUTHORIZED
    }
}

/// The server API's HTTP status for a hub error.
pub fn http_status(e: &HubError) -> u16 {
    match e {
        HubError::UnknownChannel => 404,
        HubError::NotAvailable => 409,
        HubError::Unavailable => 503,
        _ => 400,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_close_codes_and_no_two_reply_codes_collide() {
        let closes = [
            close::GOING_AWAY,
            close::PROTOCOL_ERROR,
            close::POLICY,
            close::TOO_BIG,
            close::INVALID_TOKEN,
            close::TOKEN_EXPIRED,
            close::SLOW_CONSUMER,
            close::DISCONNECTED,
            close::INSUFFICIENT_STATE,
            close::HEARTBEAT_TIMEOUT,
        ];
        let replies = [
            reply::INTERNAL,
            reply::UNAUTHORIZED,
            reply::UNKNOWN_CHANNEL,
            reply::PERMISSION_DENIED,
            reply::METHOD_NOT_FOUND,
            reply::ALREADY_SUBSCRIBED,
            reply::LIMIT_EXCEEDED,
            reply::BAD_REQUEST,
            reply::NOT_AVAILABLE,
            reply::TOKEN_EXPIRED,
            reply::NOT_SUBSCRIBED,
            reply::ALREADY_CONNECTED,
            reply::UNAVAILABLE,
        ];
        for list in [&closes[..], &replies[..]] {
            let mut sorted = list.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), list.len(), "{list:?}");
        }
    }
}

//! Errors, split by who is to blame: the peer ([`ProtocolError`]), the handshake
//! ([`HandshakeError`], which maps to an HTTP status), or the caller ([`UsageError`]).

use crate::close::CloseCode;

/// The peer broke RFC 6455. Every variant maps to the close code we send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An opcode that RFC 6455 reserves (3-7, 0xB-0xF).
    #[error("reserved opcode {0:#x}")]
    ReservedOpCode(u8),
    /// RSV1, RSV2 or RSV3 set without an extension that defines it.
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// A client sent an unmasked frame.
    #[error("client frame is not masked")]
    UnmaskedClientFrame,
    /// A server sent a masked frame.
    #[error("server frame is masked")]
    MaskedServerFrame,
    /// A control frame with FIN clear.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame payload over 125 bytes")]
    ControlFrameTooLong,
    /// A continuation frame with no message in progress.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is still open.
    #[error("new data frame while a fragmented message is open")]
    ExpectedContinuation,
    /// A 64-bit payload length with the most significant bit set.
    #[error("payload length with the most significant bit set")]
    InvalidLength,
    /// A frame larger than the configured frame size limit.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// Announced payload length.
        size: u64,
        /// Configured limit.
        limit: usize,
    },
    /// A message larger than the configured message size limit.
    #[error("message exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Configured limit.
        limit: usize,
    },
    /// A text message, or a close reason, that is not valid UTF-8.
    #[error("invalid utf-8 in text payload")]
    InvalidUtf8,
    /// A close frame with a one-byte payload.
    #[error("close frame payload of one byte")]
    InvalidClosePayload,
    /// A close code that may not appear on the wire.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// RSV1 on a continuation or control frame (RFC 7692 6.1: only the first frame of a
    /// message says whether it is compressed).
    #[error("rsv1 set on a continuation or control frame")]
    UnexpectedRsv1,
    /// A compressed message that does not inflate.
    #[error("invalid compressed data")]
    InvalidCompressedData,
    /// A frame after the peer's close frame.
    #[error("frame received after close")]
    FrameAfterClose,
}

impl ProtocolError {
    /// The close code that reports this error to the peer.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 | Self::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooLarge { .. } | Self::MessageTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// The opening handshake failed. On the server side every variant maps to an HTTP status
/// ([`HandshakeError::status`]) that is sent back instead of dropping the socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The bytes are not a valid HTTP/1.1 message.
    #[error("malformed http: {0}")]
    MalformedHttp(&'static str),
    /// The head is larger than the limit.
    #[error("handshake larger than {0} bytes")]
    TooLarge(usize),
    /// More header lines than the limit.
    #[error("more than {0} headers")]
    TooManyHeaders(usize),
    /// Not a GET request.
    #[error("method must be GET")]
    MethodNotAllowed,
    /// Not HTTP/1.1.
    #[error("http version must be 1.1")]
    HttpVersion,
    /// A required header is missing or has the wrong value.
    #[error("missing or invalid header {0}")]
    Header(&'static str),
    /// `Upgrade: websocket` is missing: this is a plain HTTP request.
    #[error("not a websocket upgrade request")]
    NotUpgrade,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("unsupported websocket version")]
    UnsupportedVersion,
    /// The origin policy refused the request.
    #[error("origin not allowed")]
    OriginRejected,
    /// The application refused the request.
    #[error("rejected: {status} {reason}")]
    Rejected {
        /// HTTP status sent to the client.
        status: u16,
        /// Short reason sent as the body.
        reason: String,
    },
    /// The server answered with a status other than 101 (client side).
    #[error("server answered {status} {reason}")]
    UnexpectedStatus {
        /// Status code of the answer.
        status: u16,
        /// Reason phrase of the answer.
        reason: String,
        /// The `Location` header, for a redirect.
        location: Option<String>,
        /// The start of the body that arrived with the head (at most 200 bytes, lossy UTF-8).
        body: String,
    },
    /// A redirect the client will not follow: too many, or from wss:// to ws://.
    #[error("redirect refused: {0}")]
    Redirect(String),
    /// `Sec-WebSocket-Accept` does not match our key (client side).
    #[error("sec-websocket-accept does not match the key")]
    AcceptMismatch,
    /// The server chose a subprotocol we did not offer (client side).
    #[error("server selected subprotocol {0:?} that was not offered")]
    UnofferedProtocol(String),
    /// The server answered with an extension we did not offer (client side).
    #[error("server selected extension {0:?} that was not offered")]
    UnofferedExtension(String),
    /// The server's permessage-deflate answer is not allowed by our offer (client side).
    #[error("invalid permessage-deflate answer: {0}")]
    InvalidDeflateResponse(&'static str),
    /// A `Sec-WebSocket-Extensions` header that does not parse.
    #[error("malformed sec-websocket-extensions header")]
    MalformedExtensions,
    /// A header the client was asked to send cannot be sent as it is: a name that is not
    /// an RFC 9110 token, a value with a line break or another control character, a
    /// subprotocol that is not a token, or a header the handshake sets itself (client
    /// side; nothing was sent).
    #[error("cannot send header {name:?}: {why}")]
    InvalidRequestHeader {
        /// The header's name, as given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The URL is not a usable ws:// or wss:// URL (client side).
    #[error("invalid url: {0}")]
    InvalidUrl(&'static str),
}

impl HandshakeError {
    /// Where the server redirects to, when this is a redirect a client may follow
    /// (301, 302, 303, 307 or 308 with a `Location`).
    pub fn redirect_location(&self) -> Option<&str> {
        match self {
            Self::UnexpectedStatus { status: 301 | 302 | 303 | 307 | 308, location: Some(l), .. } => Some(l),
            _ => None,
        }
    }

    /// The HTTP status a server answers with for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::TooLarge(_) | Self::TooManyHeaders(_) => 431,
            Self::MethodNotAllowed => 405,
            Self::NotUpgrade | Self::UnsupportedVersion => 426,
            Self::OriginRejected => 403,
            Self::Rejected { status, .. } => *status,
            Self::HttpVersion => 505,
            _ => 400,
        }
    }
}

/// The caller used the API in a way that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// A send after the close handshake started.
    #[error("connection is closing or closed")]
    Closed,
    /// A ping, pong or close payload over 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlFrameTooLong,
    /// A close code that may not be sent.
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// A prepared (shared, unmasked) frame sent by a client.
    #[error("prepared frames are for servers only (client frames are masked)")]
    ClientPrepared,
}

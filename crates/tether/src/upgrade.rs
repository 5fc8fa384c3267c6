//! [`Upgrade`]: a WebSocket over a connection whose opening handshake happened elsewhere
//! (hyper's or axum's upgrade, an HTTP/2 stream, your own HTTP code, a test's in-memory
//! pipe). The rules of the handshake stay in [`tether_proto::handshake`] (the request
//! check, [`accept_key`](tether_proto::handshake::accept_key),
//! [`deflate::server_accept`](tether_proto::deflate::server_accept)); this only takes what
//! the handshake settled and starts the connection.

use crate::stream::Upgraded;
use crate::{WebSocket, WebSocketStream};
use std::sync::Arc;
use tether_proto::deflate::DeflateParams;
use tether_proto::{Config, Connection, Role};
use tokio::io::{AsyncRead, AsyncWrite};

/// A connection past its opening handshake, ready to become a [`WebSocket`] (with its own
/// driver task) or a [`WebSocketStream`] (driven by the task that polls it).
///
/// ```
/// # async fn run() {
/// use tether::{Upgrade, tether_proto::Role};
/// // Two ends of an in-memory pipe stand for a connection upgraded by an HTTP server.
/// let (a, b) = tokio::io::duplex(64 * 1024);
/// let server = Upgrade::new(a, Role::Server).protocol(Some("chat".into())).spawn();
/// let client = Upgrade::new(b, Role::Client).direct();
/// assert_eq!(server.protocol(), Some("chat"));
/// # drop(client);
/// # }
/// ```
#[derive(Debug)]
pub struct Upgrade<S> {
    io: S,
    role: Role,
    config: Arc<Config>,
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
    leftover: Vec<u8>,
}

impl<S> Upgrade<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// `io`, for the end `role` ([`Role::Client`] masks what it sends; [`Role::Server`]
    /// refuses unmasked frames and closes TCP first), with the default [`Config`], no
    /// subprotocol and no extension.
    pub fn new(io: S, role: Role) -> Self {
        Self {
            io,
            role,
            config: Arc::new(Config::default()),
            protocol: None,
            deflate: None,
            leftover: Vec::new(),
        }
    }

    /// The limits and timers (the same [`Config`] a listener or a client takes).
    pub fn config(mut self, config: impl Into<Arc<Config>>) -> Self {
        self.config = config.into();
        self
    }

    /// The subprotocol the handshake chose (`Sec-WebSocket-Protocol` of the answer).
    pub fn protocol(mut self, protocol: Option<String>) -> Self {
        self.protocol = protocol;
        self
    }

    /// The permessage-deflate parameters the handshake agreed (from
    /// [`deflate::server_accept`](tether_proto::deflate::server_accept) on a server, or
    /// the answer's on a client); `None`: no compression.
    pub fn deflate(mut self, params: Option<DeflateParams>) -> Self {
        self.deflate = params;
        self
    }

    /// Bytes the HTTP layer read past the handshake: the first bytes of the WebSocket.
    pub fn leftover(mut self, bytes: Vec<u8>) -> Self {
        self.leftover = bytes;
        self
    }

    fn upgraded(self) -> Upgraded<S> {
        let conn = match self.role {
            Role::Server => Connection::server(self.config),
            Role::Client => Connection::client(self.config, crate::client::mask_source()),
        };
        let conn = conn.with_deflate(self.deflate);
        Upgraded { io: self.io, conn, leftover: self.leftover, protocol: self.protocol, permit: None }
    }

    /// A [`WebSocket`] with its own driver task (needs a tokio runtime).
    pub fn spawn(self) -> WebSocket {
        self.upgraded().spawn()
    }

    /// A [`WebSocketStream`], driven by the task that polls it.
    pub fn direct(self) -> WebSocketStream<S> {
        self.upgraded().direct()
    }
}

//! [`HttpConnection`]: a connection whose first request is not a WebSocket handshake,
//! handed to an HTTP server (hyper) with the bytes tether has already read.

use crate::limit::Permit;
use crate::stream::{Transport, Upgraded};
use crate::{SharedWebSocket, WebSocket, WebSocketStream};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What [`Incoming::upgrade_or_http`](crate::Incoming::upgrade_or_http) found.
#[derive(Debug)]
#[non_exhaustive]
pub enum Accepted {
    /// The first request was a WebSocket handshake (HTTP/1.1); it is answered and upgraded,
    /// and the connection is run in the shape [`Opened`]'s methods choose.
    WebSocket(Opened, crate::Request),
    /// Anything else (a plain HTTP/1.x request, or HTTP/2 by ALPN or by its preface): for an
    /// HTTP server to serve.
    Http(HttpConnection),
}

/// An upgraded WebSocket connection whose shape is not chosen yet.
pub struct Opened(pub(crate) Box<Upgraded<Transport>>);

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").field("protocol", &self.0.protocol).finish_non_exhaustive()
    }
}

impl Opened {
    /// The subprotocol agreed in the handshake.
    pub fn protocol(&self) -> Option<&str> {
        self.0.protocol.as_deref()
    }

    /// A [`WebSocket`] with its own driver task.
    pub fn spawn(self) -> WebSocket {
        (*self.0).spawn()
    }

    /// A [`WebSocketStream`] driven by its caller.
    pub fn direct(self) -> WebSocketStream<Transport> {
        (*self.0).direct()
    }

    /// A [`SharedWebSocket`]: read by its caller, written from any task.
    pub fn shared(self) -> SharedWebSocket<Transport> {
        (*self.0).direct().into_shared()
    }
}

/// A connection for an HTTP server: it reads first what tether read while looking at the
/// first request, then the socket (TLS already done). It holds the connection's place
/// under the listener's `max_connections` until dropped.
#[derive(Debug)]
pub struct HttpConnection {
    io: Transport,
    read: Vec<u8>,
    pos: usize,
    http2: bool,
    remote_addr: SocketAddr,
    _permit: Permit,
}

impl HttpConnection {
    pub(crate) fn new(
        io: Transport,
        read: Vec<u8>,
        http2: bool,
        remote_addr: SocketAddr,
        permit: Permit,
    ) -> Self {
        Self { io, read, pos: 0, http2, remote_addr, _permit: permit }
    }

    /// Whether the client speaks HTTP/2 (ALPN `h2`, or the HTTP/2 preface on a plain
    /// connection: h2c with prior knowledge); otherwise HTTP/1.x.
    pub fn is_http2(&self) -> bool {
        self.http2
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// The socket, under TLS or not.
    pub fn transport(&self) -> &Transport {
        &self.io
    }
}

impl AsyncRead for HttpConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.read.len() {
            let n = (this.read.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.read[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.read.len() {
                this.read = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for HttpConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

//! WebSocket over HTTP/2 for the client (feature `http2`, RFC 8441): an extended CONNECT on
//! an HTTP/2 connection (TLS with ALPN `h2`, or h2c with prior knowledge), used only when
//! the server advertises `SETTINGS_ENABLE_CONNECT_PROTOCOL`; otherwise the caller falls
//! back to HTTP/1.1 on a fresh connection.

use crate::client::ClientConfig;
use crate::upgrade::Upgrade;
use crate::{Error, WebSocket};
use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tether_proto::handshake::{ClientHandshake, Response, Url};
use tether_proto::{HandshakeError, Role};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What an attempt over HTTP/2 came to.
pub(crate) enum Attempt {
    /// The WebSocket, on an HTTP/2 stream.
    Connected(WebSocket, Response),
    /// The server does not take WebSockets over HTTP/2 (no HTTP/2, or no extended
    /// CONNECT): try HTTP/1.1.
    NotOffered(&'static str),
}

/// Opens a WebSocket on a new HTTP/2 connection over `io`, within the handshake timeout.
pub(crate) async fn connect<S>(io: S, url: &Url, config: &ClientConfig) -> Result<Attempt, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut options = config.options.clone();
    options.deflate = config.config.deflate.clone();
    let (handshake, mut request) = ClientHandshake::new_h2(url, options)?;
    request.extensions_mut().insert(h2::ext::Protocol::from_static("websocket"));
    let work = async {
        let (sender, mut connection) = match h2::client::handshake(io).await {
            Ok(pair) => pair,
            Err(_) => return Ok(Attempt::NotOffered("the server does not speak HTTP/2")),
        };
        let mut ping = connection.ping_pong();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("http/2 connection ended: {e}");
            }
        });
        // The server's SETTINGS come first (RFC 9113 3.4): once a PING has come back, they
        // have been read, and whether extended CONNECT is allowed is known.
        if let Some(ping) = ping.as_mut() {
            if ping.ping(h2::Ping::opaque()).await.is_err() {
                return Ok(Attempt::NotOffered("the server does not speak HTTP/2"));
            }
        }
        let mut sender = match sender.ready().await {
            Ok(s) => s,
            Err(_) => return Ok(Attempt::NotOffered("the HTTP/2 connection ended")),
        };
        if !sender.is_extended_connect_protocol_enabled() {
            return Ok(Attempt::NotOffered("the server does not allow WebSockets over HTTP/2"));
        }
        let (answer, send) = sender.send_request(request, false).map_err(h2_error)?;
        drop(sender);
        let answer = answer.await.map_err(h2_error)?;
        let (parts, recv) = answer.into_parts();
        let response = handshake.check_h2_response(parts.status.as_u16(), parts.headers)?;
        let io = H2Stream { send, recv, buf: Bytes::new() };
        let ws = Upgrade::new(io, Role::Client)
            .config(config.config.clone())
            .protocol(response.protocol.clone())
            .deflate(response.deflate.clone())
            .spawn();
        Ok(Attempt::Connected(ws, response))
    };
    tokio::time::timeout(config.config.handshake_timeout, work).await.map_err(|_| Error::Timeout)?
}

fn h2_error(e: h2::Error) -> Error {
    Error::from(HandshakeError::MalformedHttp(if e.is_go_away() {
        "the server closed the HTTP/2 connection"
    } else if e.is_reset() {
        "the server reset the HTTP/2 stream"
    } else {
        "HTTP/2 error"
    }))
}

/// An HTTP/2 stream as a byte stream: DATA frames in, DATA frames out.
struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// What is left of the last DATA frame read.
    buf: Bytes,
}

fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io().unwrap_or_else(|| io::Error::other("http/2 i/o error"))
    } else {
        io::Error::new(io::ErrorKind::ConnectionReset, e)
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.buf.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Read and handed on: the peer may send as much again.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    this.buf = data;
                }
                // The stream ended (END_STREAM), or was closed without an error: end of
                // input, as a TCP FIN.
                Some(Err(e)) if e.reason() == Some(h2::Reason::NO_ERROR) => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.send.reserve_capacity(buf.len());
        match ready!(this.send.poll_capacity(cx)) {
            Some(Ok(n)) if n > 0 => {
                let n = n.min(buf.len());
                this.send.send_data(Bytes::copy_from_slice(&buf[..n]), false).map_err(io_error)?;
                Poll::Ready(Ok(n))
            }
            Some(Ok(_)) => {
                // No window yet: poll_capacity wakes us when there is.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Err(e)) => Poll::Ready(Err(io_error(e))),
            None => Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "http/2 stream closed"))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 writes what it has as soon as the connection task runs.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // END_STREAM: the HTTP/2 form of closing the write side.
        let this = self.get_mut();
        let _ = this.send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}

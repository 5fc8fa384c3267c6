//! Moving bytes between a WebSocket and a TCP stream or a UDP socket, both ways at once.
//!
//! Backpressure comes from awaiting each write: while the TCP side does not take more, the
//! WebSocket is not read (its TCP window fills and its sender waits), and while the
//! WebSocket's send buffer is over its limit, the TCP side is not read. A TCP FIN from the
//! target closes the WebSocket with 1000; a WebSocket close shuts the TCP side's writing
//! half (FIN) and ends the bridge.

use super::Common;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tether::{CloseCode, CloseFrame, Message, Transport, WebSocketStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A bridged WebSocket.
pub(crate) type Ws = WebSocketStream<Transport>;

/// How bytes ride in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Binary messages (the `binary` subprotocol, or none); text is refused unless
    /// `--text` accepts its UTF-8 bytes.
    Binary,
    /// Text messages holding base64 (the `base64` subprotocol, for old clients).
    Base64,
}

impl Framing {
    /// The framing a negotiated subprotocol asks for.
    pub(crate) fn of(protocol: Option<&str>) -> Self {
        if protocol == Some("base64") {
            Self::Base64
        } else {
            Self::Binary
        }
    }
}

/// Why a bridged connection ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The socket side ended (TCP FIN).
    SocketClosed,
    /// The WebSocket peer closed.
    WsClosed,
    /// The WebSocket failed (reset, protocol error).
    WsFailed(String),
    /// The socket side failed.
    SocketFailed(String),
    /// A text message where binary was expected.
    Text,
    /// Text that is not base64 under the `base64` subprotocol.
    BadBase64,
    /// Nothing either way for the idle timeout.
    Idle,
    /// The bridge is shutting down (Ctrl-C, SIGTERM).
    Shutdown,
}

impl End {
    /// The close code and reason the WebSocket gets, if it is still open.
    pub(crate) fn close(&self) -> Option<(u16, String)> {
        Some(match self {
            Self::SocketClosed => (1000, "the other side closed the connection".into()),
            Self::SocketFailed(e) => (1011, format!("target connection failed: {e}")),
            Self::Text => (1003, "text message: this bridge carries binary messages (or base64 text with the base64 subprotocol)".into()),
            Self::BadBase64 => (1007, "invalid base64 in a text message".into()),
            Self::Idle => (1001, "idle timeout".into()),
            Self::Shutdown => (1001, "bridge shutting down".into()),
            Self::WsClosed | Self::WsFailed(_) => return None,
        })
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SocketClosed => f.write_str("the socket side closed"),
            Self::WsClosed => f.write_str("the WebSocket peer closed"),
            Self::WsFailed(e) => write!(f, "the WebSocket failed: {e}"),
            Self::SocketFailed(e) => write!(f, "the socket failed: {e}"),
            Self::Text => f.write_str("a text message in binary mode (1003)"),
            Self::BadBase64 => f.write_str("invalid base64 (1007)"),
            Self::Idle => f.write_str("idle timeout (1001)"),
            Self::Shutdown => f.write_str("the bridge shut down (1001)"),
        }
    }
}

/// Bytes moved by one bridged connection.
#[derive(Debug, Default)]
pub(crate) struct Moved {
    /// From the WebSocket to the socket.
    pub(crate) to_socket: AtomicU64,
    /// From the socket to the WebSocket.
    pub(crate) to_ws: AtomicU64,
    /// Milliseconds since `start` of the last byte either way.
    last: AtomicU64,
}

impl Moved {
    fn touch(&self, start: Instant) {
        self.last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// The data of a received message, `None` for a control frame; an `End` for what must
/// end the connection.
pub(crate) fn data(
    item: Option<Result<Message, tether::Error>>,
    framing: Framing,
    text: bool,
) -> Result<Option<Bytes>, End> {
    match item {
        None | Some(Ok(Message::Close(_))) => Err(End::WsClosed),
        Some(Err(e)) => Err(End::WsFailed(e.to_string())),
        Some(Ok(Message::Binary(b))) => Ok(Some(b)),
        Some(Ok(Message::Text(t))) => match framing {
            Framing::Base64 => {
                STANDARD.decode(t.as_str().trim()).map(|b| Some(b.into())).map_err(|_| End::BadBase64)
            }
            Framing::Binary if text => Ok(Some(t.into_bytes())),
            Framing::Binary => Err(End::Text),
        },
        Some(Ok(_)) => Ok(None),
    }
}

/// The message carrying `chunk`.
pub(crate) fn message(chunk: Bytes, framing: Framing) -> Message {
    match framing {
        Framing::Binary => Message::Binary(chunk),
        Framing::Base64 => Message::text(STANDARD.encode(&chunk)),
    }
}

/// Resolves once nothing has moved for `idle` (never without one).
async fn idle(moved: &Moved, start: Instant, idle: Option<Duration>) -> End {
    let Some(idle) = idle else { return std::future::pending().await };
    loop {
        let last = Duration::from_millis(moved.last.load(Ordering::Relaxed));
        let quiet = start.elapsed().saturating_sub(last);
        if quiet >= idle {
            return End::Idle;
        }
        tokio::time::sleep(idle - quiet).await;
    }
}

/// Closes a WebSocket with `code` and `reason` (cut to 120 bytes), and waits (bounded by
/// the close timeout) for the peer's answer.
pub(crate) async fn close_with<W>(ws: &mut W, code: u16, reason: &str)
where
    W: StreamExt<Item = Result<Message, tether::Error>> + SinkExt<Message> + Unpin,
{
    let mut reason = reason.to_owned();
    while reason.len() > 120 {
        reason.pop();
    }
    match ws.send(Message::Close(Some(CloseFrame { code: CloseCode(code), reason }))).await {
        Ok(()) => while ws.next().await.is_some() {},
        Err(_) => tracing::debug!(code, "close not sent: the connection has ended"),
    }
}

/// Closes the WebSocket as `end` says; after the peer's close (or a protocol error), sends
/// what the connection queued (its close reply, or the error's close code).
pub(crate) async fn finish(ws: &mut Ws, end: &End) {
    match end.close() {
        Some((code, reason)) => close_with(ws, code, &reason).await,
        None => {
            let _ = ws.close().await;
        }
    }
}

/// Where the WebSocket's bytes go: a TCP stream's writing half, or a connected UDP
/// socket (one call, one datagram).
trait SocketOut {
    fn put<'a>(
        &'a mut self,
        bytes: &'a [u8],
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'a;
}

impl SocketOut for tokio::net::tcp::OwnedWriteHalf {
    fn put<'a>(
        &'a mut self,
        bytes: &'a [u8],
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'a {
        self.write_all(bytes)
    }
}

impl SocketOut for &UdpSocket {
    async fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.send(bytes).await.map(|_| ())
    }
}

/// Carries the WebSocket's messages to the socket until one side ends.
async fn ws_to_socket(
    stream: &mut futures_util::stream::SplitStream<Ws>,
    out: &mut impl SocketOut,
    framing: Framing,
    common: &Common,
    moved: &Moved,
    start: Instant,
) -> End {
    loop {
        let bytes = match data(stream.next().await, framing, common.text) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(end) => return end,
        };
        moved.touch(start);
        moved.to_socket.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if let Err(e) = out.put(&bytes).await {
            return End::SocketFailed(e.to_string());
        }
    }
}

/// Completes when the bridge shuts down.
async fn stopped(common: &Common) -> End {
    let mut stopping = common.stopping.clone();
    if stopping.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
    End::Shutdown
}

/// Bridges `ws` and a TCP stream until either ends.
pub(crate) async fn tcp(ws: Ws, tcp: TcpStream, framing: Framing, common: &Common, moved: &Moved) -> End {
    let start = Instant::now();
    let _ = tcp.set_nodelay(true);
    let (mut sink, mut stream) = ws.split();
    let (mut from_socket, mut to_socket) = tcp.into_split();
    let end = {
        let up = ws_to_socket(&mut stream, &mut to_socket, framing, common, moved, start);
        let down = async {
            let mut buf = BytesMut::new();
            loop {
                if buf.capacity() < 4096 {
                    buf.reserve(64 * 1024);
                }
                match from_socket.read_buf(&mut buf).await {
                    Ok(0) => return End::SocketClosed,
                    Ok(n) => {
                        moved.touch(start);
                        moved.to_ws.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => return End::SocketFailed(e.to_string()),
                }
                // The bytes read go out without a copy; `buf` keeps the rest of its space.
                if let Err(e) = sink.send(message(buf.split().freeze(), framing)).await {
                    return End::WsFailed(e.to_string());
                }
            }
        };
        tokio::select! {
            end = up => end,
            end = down => end,
            end = idle(moved, start, common.idle_timeout) => end,
            end = stopped(common) => end,
        }
    };
    if matches!(end, End::WsClosed) {
        // The peer is done sending: the target gets a FIN.
        let _ = to_socket.shutdown().await;
    }
    let mut ws = sink.reunite(stream).expect("halves of one stream");
    finish(&mut ws, &end).await;
    end
}

/// Bridges `ws` and a connected UDP socket: one message is one datagram, both ways.
pub(crate) async fn udp(ws: Ws, sock: UdpSocket, framing: Framing, common: &Common, moved: &Moved) -> End {
    let start = Instant::now();
    let (mut sink, mut stream) = ws.split();
    let end = {
        let mut out = &sock;
        let up = ws_to_socket(&mut stream, &mut out, framing, common, moved, start);
        let down = async {
            let mut buf = vec![0u8; 65536];
            loop {
                let n = match sock.recv(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => return End::SocketFailed(e.to_string()),
                };
                moved.touch(start);
                moved.to_ws.fetch_add(n as u64, Ordering::Relaxed);
                if let Err(e) = sink.send(message(Bytes::copy_from_slice(&buf[..n]), framing)).await {
                    return End::WsFailed(e.to_string());
                }
            }
        };
        tokio::select! {
            end = up => end,
            end = down => end,
            end = idle(moved, start, common.idle_timeout) => end,
            end = stopped(common) => end,
        }
    };
    let mut ws = sink.reunite(stream).expect("halves of one stream");
    finish(&mut ws, &end).await;
    end
}

/// The close code of a WebSocket whose target could not be reached: 4014, the
/// application-range twin of IANA's 1014 "bad gateway", which RFC 6455 leaves reserved
/// (tether does not send 1012-1014, as Autobahn's strict cases expect).
pub(crate) const UNREACHABLE: u16 = 4014;

/// Closes a WebSocket whose target could not be reached.
pub(crate) async fn refuse(mut ws: Ws, reason: String) {
    close_with(&mut ws, UNREACHABLE, &format!("target unreachable: {reason}")).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_to_data() {
        let bin = Some(Ok(Message::binary(&b"ab"[..])));
        assert_eq!(data(bin, Framing::Binary, false).unwrap(), Some(Bytes::from_static(b"ab")));
        assert!(matches!(data(Some(Ok(Message::text("ab"))), Framing::Binary, false), Err(End::Text)));
        assert_eq!(
            data(Some(Ok(Message::text("ab"))), Framing::Binary, true).unwrap(),
            Some(Bytes::from_static(b"ab"))
        );
        assert_eq!(
            data(Some(Ok(Message::text("YWI="))), Framing::Base64, false).unwrap(),
            Some(Bytes::from_static(b"ab"))
        );
        assert!(matches!(data(Some(Ok(Message::text("*"))), Framing::Base64, false), Err(End::BadBase64)));
        assert!(matches!(data(None, Framing::Binary, false), Err(End::WsClosed)));
        assert_eq!(data(Some(Ok(Message::Ping(Bytes::new()))), Framing::Binary, false).unwrap(), None);
        assert_eq!(message(Bytes::from_static(b"ab"), Framing::Base64), Message::text("YWI="));
        assert_eq!(End::Text.close().unwrap().0, 1003);
        assert_eq!(End::SocketClosed.close().unwrap().0, 1000);
        assert!(End::WsClosed.close().is_none());
    }
}

//! tether: WebSocket (RFC 6455) client and server on tokio.
//!
//! This crate is the I/O shell around [`tether_proto`], which holds every protocol rule. It
//! adds sockets, timers and randomness: [`accept`] / [`Listener`] on the server side,
//! [`connect`] on the client side, and a [`WebSocket`] that is a `Stream` of [`Message`]s
//! and a `Sink` for sending, over TCP or TLS ([`tls`], rustls). It is not a hub.
//!
//! ```text
//!  app ──Sink/Sender──▶ commands ─┐          ┌─▶ socket writes
//!                                 ▼          │
//!                          driver task: tether_proto::Connection
//!                                 │          ▲
//!  app ◀──Stream───── messages ◀──┘          └── socket reads, timers
//! ```
//!
//! ```no_run
//! use futures_util::{SinkExt, StreamExt};
//! # async fn run() -> Result<(), tether::Error> {
//! let (mut ws, _response) = tether::connect("ws://127.0.0.1:9001/").await?;
//! ws.send(tether::Message::text("hello")).await?;
//! while let Some(msg) = ws.next().await {
//!     println!("{:?}", msg?);
//! }
//! # Ok(()) }
//! ```

#[cfg(feature = "axum")]
pub mod axum;
mod client;
mod dial;
mod driver;
mod error;
#[cfg(feature = "http2")]
mod h2;
mod handoff;
#[cfg(feature = "hyper")]
pub mod hyper;
mod intern;
mod limit;
mod message;
pub mod prefetch;
mod server;
mod shared;
mod socket;
mod stream;
pub mod timer;
pub mod tls;
mod upgrade;

pub use client::{client_handshake, connect, connect_direct, connect_with, ClientConfig};
pub use dial::Proxy;
pub use error::{ConnectError, ConnectErrorKind, Error};
pub use handoff::{Accepted, HttpConnection, Opened};
pub use limit::ListenerStats;
pub use message::Message;
pub use server::{
    accept, accept_async, accept_direct, accept_with, Accept, HttpRequest, HttpResponse, Incoming, Listener,
    Reject, ServerConfig,
};
pub use shared::{yield_while_fed, Cork, FeedBatch, SharedSender, SharedWebSocket};
pub use socket::{ReadHalf, Sender, WebSocket, WriteHalf};
pub use stream::{Transport, TryWrite, WebSocketStream};
pub use tether_proto;
pub use tether_proto::deflate::DeflateConfig;
pub use tether_proto::frame::PreparedFrame;
pub use tether_proto::handshake::{ClientOptions, HandshakeLimits, OriginPolicy, Request, Response, Url};
pub use tether_proto::proxy::ProxyUrl;
pub use tether_proto::{CloseCode, CloseFrame, Closed, Config, Initiator, Stats, Utf8Bytes};
pub use upgrade::Upgrade;

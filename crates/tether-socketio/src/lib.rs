//! A Socket.IO v4 server on tether and hyper: Engine.IO protocol v4 (HTTP long-polling,
//! WebSocket, the upgrade between them, heartbeats) and Socket.IO protocol v5 (namespaces,
//! events, acknowledgements, binary attachments, rooms, middleware).
//!
//! ```no_run
//! use tether_socketio::{Args, Config, SocketIo};
//!
//! # async fn run() -> std::io::Result<()> {
//! let io = SocketIo::new(Config::default());
//! io.ns("/", |socket| {
//!     // Answer "ping" with "pong", and acknowledge "hello" with its own arguments.
//!     socket.on("ping", |socket, _event| async move {
//!         socket.emit("pong", &Args::new());
//!     });
//!     socket.on("hello", |_socket, mut event| async move {
//!         if let Some(ack) = event.take_ack() {
//!             ack.send(event.args());
//!         }
//!     });
//!     // Rooms: everyone in "lobby" but this socket hears about it.
//!     socket.join("lobby");
//!     let _ = Args::one("joined").map(|a| socket.to("lobby").emit("news", &a));
//! });
//! // Serve `io.handle(request)` for requests under /socket.io/ from a hyper server:
//! // see examples/socketio_chat.rs, or `tether_socketio::serve`.
//! tether_socketio::serve(tokio::net::TcpListener::bind("127.0.0.1:3000").await?, "/socket.io/", io, std::future::pending()).await;
//! # Ok(())
//! # }
//! ```

pub mod engine;
pub mod parser;
mod server;
mod testing;

pub use server::{
    AckError, AckSender, Args, Broadcast, Config, Event, Handshake, Namespace, Recovery, Socket, SocketIo,
};
pub use testing::{serve, serve_engine, TestServer};

//! The sans-IO core of tether: everything RFC 6455 says, and nothing about sockets or time.
//!
//! It parses and builds the opening handshake, encodes and decodes frames, masks, assembles
//! fragments, checks UTF-8 as it arrives, runs the close handshake and enforces limits. It
//! never reads or writes a socket, never reads the clock and has no random source of its
//! own: the I/O layer (crate `tether`) brings bytes, time and randomness, and takes bytes
//! and events away. The same code therefore runs under tokio, in tests with a fake clock,
//! and in fuzz targets.
//!
//! ```text
//!   bytes from peer ──handle_bytes──▶ ┌────────────┐ ──poll_event────▶ messages, pings, close
//!   now ────────────handle_timeout──▶ │ Connection │ ──poll_timeout──▶ next deadline
//!   send_text / send_binary / close ▶ └────────────┘ ──poll_transmit─▶ bytes to peer
//! ```
//!
//! ```
//! use tether_proto::{Config, Connection, Event, Utf8Bytes};
//!
//! let mut server = Connection::server(Config::default());
//! let mut client = Connection::client(Config::default(), Box::new(|| [1, 2, 3, 4]));
//! client.send_text(Utf8Bytes::from("hello")).unwrap();
//! let mut wire = Vec::new();
//! while client.poll_transmit(&mut wire) {}
//! server.handle_bytes(&wire);
//! assert_eq!(server.poll_event().unwrap(), Some(Event::Text("hello".into())));
//! ```

pub mod close;
mod config;
mod conn;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod proxy;
mod text;
pub mod utf8;

pub use close::{CloseCode, CloseFrame, Closed, Initiator};
pub use config::Config;
pub use conn::{Connection, Event, MaskSource, Role, Stats};
pub use error::{HandshakeError, ProtocolError, UsageError};
pub use text::Utf8Bytes;

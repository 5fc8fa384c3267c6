//! The tether hub: channels with history and recovery, presence, join/leave events, and
//! fan-out with one encode per publication, behind the `tether.json` WebSocket protocol,
//! a server API over HTTP, `/metrics` and `/healthz`, and a demo page.
//!
//! ```text
//!  browsers, apps ──tether.json──▶ json front-end ─┐
//!  stomp.js, STOMP apps ──STOMP──▶ stomp front-end ─┤   (/queue/*: work queues)
//!  server API (HTTP POST /api/*) ──────────────────┼──▶ Hub (memory broker) ──▶ Outlets
//!  /metrics, /healthz, demo page ◀── server ───────┘
//! ```

pub mod auth;
pub mod gate;
pub mod hub;
pub mod json;
pub mod metrics;
pub mod options;
pub mod queue;
#[cfg(feature = "redis")]
pub mod redis_broker;
#[cfg(feature = "redis")]
mod redis_queue;
pub mod server;
pub mod stomp;
pub mod web;

pub use auth::{Authenticator, Identity, Jwt, NoTokens};
pub use hub::{Access, ClientInfo, Hub, HubError};
pub use options::{HubOptions, NamespaceOptions};
#[cfg(feature = "redis")]
pub use redis_broker::RedisOptions;
pub use server::{ServeOptions, Server};

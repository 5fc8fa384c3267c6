//! The tether hub: channels with history and recovery, presence, join/leave events, work
//! queues, and fan-out with one encode per publication, behind WebSocket front-ends
//! (`tether.json`, STOMP; over SockJS too), a server API over HTTP, `/metrics` and `/healthz`, and a demo page.
//!
//! ```text
//!  front-ends (frontend/: json, stomp)     translate a wire format to session calls
//!        │  session layer (session/): auth, expiry + refresh, permissions, slow consumers
//!  hub core (hub/): channels, subscriptions, presence, history + recovery, queues, fan-out
//!        │  Broker down, BrokerEvents up
//!  brokers (broker/): memory (default), others behind features
//!  http/: the port: WebSocket endpoints, demo page, server API, /metrics, /healthz
//! ```
//!
//! docs/DESIGN.md has the picture and what each module may import. The public API is what
//! the CLI and an embedding application need: a [`Hub`] over a broker, a [`Server`] on a
//! port, the options, the token checks, the code table and the STOMP frame codec.

pub mod broker;
pub mod codes;
pub mod frontend;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod options;
pub mod session;

pub use frontend::socketio::SocketIoOptions;
pub use frontend::sockjs::SockJsOptions;
/// The STOMP front-end's options and frame codec (also at `frontend::stomp`).
pub use frontend::stomp;
pub use frontend::stomp::StompOptions;
pub use http::{ServeOptions, Server};
pub use hub::{Access, BrokerHandle, ClientInfo, Hub, HubError, QueueLimits};
pub use options::{HubOptions, NamespaceOptions};
pub use session::auth::{AuthError, Authenticator, Identity, Jwt, NoTokens};

//! Front-ends: each translates one wire format to session calls and back. A front-end
//! knows no broker and no other front-end; it declares here which WebSocket subprotocols
//! and which path it answers, and the HTTP layer hands it the connections that match.
//! Adding one is an addition to [`registered`], not an edit elsewhere.

pub mod json;
pub mod socketio;
pub mod sockjs;
pub mod stomp;

use crate::session::link::Link;
use crate::session::{Door, Session};
use futures_util::future::BoxFuture;
use std::sync::Arc;

/// What a front-end gets to serve a connection.
#[derive(Clone)]
pub(crate) struct Context {
    /// The hub and the authenticator, which every session holds.
    pub(crate) door: Arc<Door>,
    pub(crate) stomp: Arc<stomp::StompOptions>,
}

/// A wire format the hub speaks over WebSocket.
pub(crate) trait FrontEnd: Send + Sync {
    /// The subprotocols it speaks, preferred first.
    fn subprotocols(&self) -> &'static [&'static str];
    /// The path where a connection without a subprotocol speaks it.
    fn path(&self) -> &'static str;
    /// Runs one connection (a WebSocket or a SockJS session) in `session`, which the
    /// caller made (holding the connection's place, where it counts one), until it
    /// closes; `subprotocol` is the negotiated one.
    fn serve(
        &self,
        link: Link,
        session: Session,
        cx: Context,
        subprotocol: Option<String>,
    ) -> BoxFuture<'static, ()>;
}

/// Every front-end, the default (for `/ws` without a subprotocol) first.
pub(crate) fn registered() -> &'static [&'static dyn FrontEnd] {
    &[&json::Json, &stomp::Stomp]
}

/// Every subprotocol the hub speaks, in the order the front-ends are registered.
pub fn subprotocols() -> Vec<&'static str> {
    registered().iter().flat_map(|f| f.subprotocols().iter().copied()).collect()
}

/// The front-end for a connection: by its negotiated subprotocol, else by its path.
pub(crate) fn pick(subprotocol: Option<&str>, path: &str) -> Option<&'static dyn FrontEnd> {
    let all = registered();
    match subprotocol {
        Some(p) => all.iter().find(|f| f.subprotocols().contains(&p)).copied(),
        None => all.iter().find(|f| f.path() == path).copied(),
    }
}

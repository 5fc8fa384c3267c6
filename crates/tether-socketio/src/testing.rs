//! Serving on a listener, and the conformance fixture of the Socket.IO project.

use crate::engine::packet::{Data, Frame};
use crate::engine::{Body, Cors, Engine, EngineConfig};
use crate::server::{Args, Config, SocketIo};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What a server answers under a path.
#[derive(Clone)]
enum Route {
    Engine(Arc<Engine>),
    SocketIo(SocketIo),
}

impl Route {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        match self {
            Self::Engine(e) => e.handle(req).await,
            Self::SocketIo(io) => io.handle(req).await,
        }
    }
}

async fn run(
    listener: tokio::net::TcpListener,
    routes: Arc<Vec<(String, Route)>>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let routes = routes.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let routes = routes.clone();
            async move {
                let path = req.uri().path();
                let route =
                    routes.iter().find(|(prefix, _)| path == prefix || path == prefix.trim_end_matches('/'));
                let r = match route {
                    Some((_, route)) => route.clone().handle(req).await,
                    None => {
                        let mut r = Response::new(Body::from("Not found\n"));
                        *r.status_mut() = StatusCode::NOT_FOUND;
                        r
                    }
                };
                Ok::<_, Infallible>(r)
            }
        });
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = builder.serve_connection_with_upgrades(io, service).await;
        });
    }
}

/// Serves `io` at `path` (say `/socket.io/`) on `listener`, HTTP/1.1 and HTTP/2, until
/// `shutdown` completes; then closes every session.
pub async fn serve(
    listener: tokio::net::TcpListener,
    path: &str,
    io: SocketIo,
    shutdown: impl Future<Output = ()>,
) {
    let engine = io.engine().clone();
    run(listener, Arc::new(vec![(path.to_owned(), Route::SocketIo(io))]), shutdown).await;
    engine.close_all();
}

/// Serves a bare Engine.IO server at `path` (say `/engine.io/`) on `listener` until
/// `shutdown` completes; then closes every session.
pub async fn serve_engine(
    listener: tokio::net::TcpListener,
    path: &str,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()>,
) {
    run(listener, Arc::new(vec![(path.to_owned(), Route::Engine(engine.clone()))]), shutdown).await;
    engine.close_all();
}

/// The servers the Socket.IO project's protocol test suites expect, on one port: an
/// Engine.IO server at `/engine.io/` that echoes every message, and a Socket.IO server at
/// `/socket.io/` with the namespaces `/` and `/custom` (`pingInterval` 300 ms, `pingTimeout`
/// 200 ms, `maxPayload` 1,000,000, `connectTimeout` 1,000 ms, any origin). On connection to
/// either namespace it emits `auth` with the handshake's auth payload; on `/`, `message` is
/// answered with `message-back` and the same arguments, and `message-with-ack` is
/// acknowledged with them. For checking conformance (`tether echo --socketio`), not for
/// production.
pub struct TestServer {
    listener: tokio::net::TcpListener,
    routes: Arc<Vec<(String, Route)>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer").field("listener", &self.listener).finish_non_exhaustive()
    }
}

/// The fixture's Engine.IO settings.
pub(crate) fn test_engine_config() -> EngineConfig {
    EngineConfig {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        cors: Cors::Any,
        ..EngineConfig::default()
    }
}

impl TestServer {
    /// Binds `addr` (the suites use `localhost:3000`).
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn bind(addr: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let engine = Engine::new(test_engine_config(), |mut conn| {
            tokio::spawn(async move {
                while let Some(data) = conn.messages.recv().await {
                    let frame = match data {
                        Data::Text(t) => Frame::message(&t),
                        Data::Binary(b) => Frame::Binary(b),
                    };
                    if !conn.socket.send(&[frame]) {
                        break;
                    }
                }
            });
        });
        let config = Config {
            engine: test_engine_config(),
            connect_timeout: Duration::from_millis(1000),
            ..Config::default()
        };
        let io = SocketIo::new(config);
        io.ns("/", |socket| {
            socket.emit("auth", &Args::new().raw(socket.handshake().auth.to_owned_raw()));
            socket.on("message", |socket, event| async move {
                socket.emit("message-back", event.args());
            });
            socket.on("message-with-ack", |_socket, mut event| async move {
                if let Some(ack) = event.take_ack() {
                    ack.send(event.args());
                }
            });
        });
        io.ns("/custom", |socket| {
            socket.emit("auth", &Args::new().raw(socket.handshake().auth.to_owned_raw()));
        });
        let routes = vec![
            ("/engine.io/".to_owned(), Route::Engine(engine)),
            ("/socket.io/".to_owned(), Route::SocketIo(io)),
        ];
        Ok(Self { listener, routes: Arc::new(routes) })
    }

    /// The bound address.
    ///
    /// # Errors
    ///
    /// From the socket.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        run(self.listener, self.routes, shutdown).await;
    }
}

/// A copy of shared JSON as an owned value.
trait ToOwnedRaw {
    fn to_owned_raw(&self) -> Box<serde_json::value::RawValue>;
}

impl ToOwnedRaw for Arc<serde_json::value::RawValue> {
    fn to_owned_raw(&self) -> Box<serde_json::value::RawValue> {
        (**self).to_owned()
    }
}

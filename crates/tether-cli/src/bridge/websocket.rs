//! The WebSocket-listening side: each WebSocket gets its own connection to the target its
//! request names (or the default one), after the access check.

use super::pump::{self, End, Framing, Moved};
use super::routes::{NoRoute, Routes, Target};
use super::{Args, Common};
use anyhow::Context as _;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tether::{HttpResponse, Listener, OriginPolicy, Reject, ServerConfig};
use tether_hub::Authenticator as _;
use tokio::net::{lookup_host, TcpStream, UdpSocket};

/// Who may use the bridge.
enum Access {
    /// Anyone who can reach the port (and passes the origin policy).
    Open,
    /// Whoever presents this token.
    Token(String),
    /// Whoever presents a JWT these keys accept (the hub's token checks).
    Jwt(tether_hub::Jwt),
}

/// The token a request presents: `Authorization: Bearer …`, or `?access_token=…` (what a
/// browser can send).
fn presented(req: &tether::Request) -> Option<&str> {
    let header = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    header.or_else(|| req.query.as_deref()?.split('&').find_map(|kv| kv.strip_prefix("access_token=")))
}

impl Access {
    /// Checks the request; the routes a JWT limits it to, if any.
    fn check(&self, req: &tether::Request) -> Result<Option<Vec<String>>, Reject> {
        let missing = || {
            Reject::new(401, "this bridge needs a token: Authorization: Bearer TOKEN or ?access_token=TOKEN")
        };
        match self {
            Self::Open => Ok(None),
            Self::Token(want) => {
                let got = presented(req).ok_or_else(missing)?;
                if tether_hub::session::auth::same_secret(got.as_bytes(), want.as_bytes()) {
                    Ok(None)
                } else {
                    Err(Reject::new(401, "wrong token"))
                }
            }
            Self::Jwt(jwt) => {
                let got = presented(req).ok_or_else(missing)?;
                let identity = jwt.authenticate(got).map_err(|e| Reject::new(401, e.message))?;
                Ok(identity.access.channels.map(Vec::from))
            }
        }
    }
}

/// Counters for `/metrics`.
#[derive(Default)]
struct Metrics {
    accepted: AtomicU64,
    open: AtomicU64,
    refused: AtomicU64,
    unreachable: AtomicU64,
    to_socket: AtomicU64,
    to_ws: AtomicU64,
}

impl Metrics {
    fn render(&self) -> String {
        let mut out = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let rows = [
            (
                "tether_bridge_connections_total",
                "counter",
                "WebSocket connections bridged.",
                get(&self.accepted),
            ),
            ("tether_bridge_connections", "gauge", "WebSocket connections open.", get(&self.open)),
            (
                "tether_bridge_refused_total",
                "counter",
                "Handshakes refused (token, route, origin).",
                get(&self.refused),
            ),
            (
                "tether_bridge_unreachable_total",
                "counter",
                "Connections whose target could not be reached.",
                get(&self.unreachable),
            ),
            (
                "tether_bridge_bytes_to_target_total",
                "counter",
                "Bytes from WebSocket clients to targets.",
                get(&self.to_socket),
            ),
            (
                "tether_bridge_bytes_from_target_total",
                "counter",
                "Bytes from targets to WebSocket clients.",
                get(&self.to_ws),
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
        }
        out
    }
}

struct State {
    routes: Routes,
    access: Access,
    common: Common,
    metrics: Metrics,
}

pub(super) async fn run(args: Args, common: Common) -> anyhow::Result<ExitCode> {
    let file = match &args.routes_file {
        Some(path) => Some((
            path.clone(),
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read routes file {}", path.display()))?,
        )),
        None => None,
    };
    let routes =
        Routes::new(args.to.as_deref(), &args.routes, file.as_ref().map(|(p, t)| (p.as_path(), t.as_str())))?;
    for t in routes.default.iter().chain(routes.named.values()) {
        if matches!(t, Target::WebSocket(_)) {
            anyhow::bail!("target {t}: a bridge listening for WebSocket forwards to tcp:// or udp://");
        }
    }
    let access = match (&args.access_token, &args.token_hmac_secret, &args.token_rsa_public_key) {
        (Some(t), None, None) => {
            anyhow::ensure!(t.len() >= 16, "--access-token must be at least 16 characters");
            Access::Token(t.clone())
        }
        (None, None, None) => Access::Open,
        (None, hmac, rsa) => {
            let pem = match rsa {
                Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?),
                None => None,
            };
            let jwt = tether_hub::Jwt::new(hmac.as_deref().map(str::as_bytes), pem.as_deref())
                .map_err(|e| anyhow::anyhow!("tokens: {e}"))?;
            Access::Jwt(jwt)
        }
        (Some(_), _, _) => anyhow::bail!(
            "give --access-token or JWT keys (--token-hmac-secret, --token-rsa-public-key), not both"
        ),
    };
    let origin = match args.allow_origins.as_slice() {
        [] => OriginPolicy::SameHost,
        [any] if any == "*" => OriginPolicy::Any,
        list => OriginPolicy::AllowList(list.to_vec()),
    };
    // Each bridged WebSocket holds a second socket, to its target.
    let max = args.max_connections.unwrap_or(ServerConfig::default().max_connections / 2).max(1);
    let server = ServerConfig::default()
        .with_max_connections(max)
        .with_config(common.config.clone())
        .with_protocols(["binary", "base64"])
        .with_origin(origin);
    let (server, tls) = args.tls.apply(server)?;
    let (scheme, rest) = args.listen.split_once("://").unwrap_or(("ws", &args.listen));
    anyhow::ensure!(
        (scheme == "wss") == tls,
        "wss:// needs --tls-cert/--tls-key (or --tls-self-signed), and ws:// none"
    );
    let addr = rest.trim_end_matches('/');
    let listener = Listener::bind(addr, server).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let targets: Vec<String> = routes
        .default
        .iter()
        .map(|t| t.to_string())
        .chain(routes.named.iter().map(|(n, t)| format!("{n}={t}")))
        .collect();
    tracing::info!("bridge listening on {scheme}://{local}/ to {}", targets.join(", "));
    let state = Arc::new(State { routes, access, common, metrics: Metrics::default() });
    loop {
        match listener.accept().await {
            Ok(incoming) => {
                tokio::spawn(serve(incoming, state.clone()));
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(incoming: tether::Incoming, state: Arc<State>) {
    let peer = incoming.remote_addr();
    let mut chosen: Option<(Target, String)> = None;
    let check = |req: &tether::Request| -> Result<(), Reject> {
        let allowed = state.access.check(req)?;
        let name = Routes::requested(&req.path, req.query.as_deref());
        let target = state.routes.pick(name.as_deref()).map_err(|e| match e {
            NoRoute::Unknown(n) => Reject::new(404, format!("unknown target {n:?}")),
            NoRoute::Unnamed => Reject::new(404, "no target: name one with ?token=NAME or /NAME"),
        })?;
        let label = name.unwrap_or_else(|| "default".to_owned());
        if allowed.is_some_and(|list| !list.contains(&label)) {
            return Err(Reject::new(403, format!("the token does not allow target {label:?}")));
        }
        chosen = Some((target.clone(), label));
        Ok(())
    };
    let route = |req: tether::HttpRequest| {
        let state = state.clone();
        async move {
            match (req.head.method.as_str(), req.head.path.as_str()) {
                ("GET", "/metrics") => {
                    HttpResponse::new(200, "text/plain; version=0.0.4", state.metrics.render())
                }
                _ => HttpResponse::text(404, "a WebSocket bridge: connect with a WebSocket client"),
            }
        }
    };
    let ws = match incoming.serve_direct(check, route).await {
        Ok(Some((ws, _))) => ws,
        Ok(None) => return,
        Err(e) => {
            state.metrics.refused.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, "refused: {e}");
            return;
        }
    };
    let Some((target, name)) = chosen else { return };
    let m = &state.metrics;
    m.accepted.fetch_add(1, Ordering::Relaxed);
    m.open.fetch_add(1, Ordering::Relaxed);
    let framing = Framing::of(ws.protocol());
    let started = Instant::now();
    let moved = Moved::default();
    let end = bridge(ws, peer, &target, framing, &state.common, &moved).await;
    m.open.fetch_sub(1, Ordering::Relaxed);
    let (up, down) = (moved.to_socket.load(Ordering::Relaxed), moved.to_ws.load(Ordering::Relaxed));
    m.to_socket.fetch_add(up, Ordering::Relaxed);
    m.to_ws.fetch_add(down, Ordering::Relaxed);
    match end {
        Some(end) => tracing::info!(
            %peer, route = %name, %target, ?framing, bytes_to_target = up, bytes_from_target = down,
            seconds = started.elapsed().as_secs_f64(), why = %end, "closed"
        ),
        None => {
            m.unreachable.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Connects to `target` and bridges; `None` if the target could not be reached (the
/// WebSocket was then closed with 1014).
async fn bridge(
    ws: pump::Ws,
    peer: SocketAddr,
    target: &Target,
    framing: Framing,
    common: &Common,
    moved: &Moved,
) -> Option<End> {
    let unreachable = |e: String| {
        tracing::warn!(%peer, %target, "target unreachable: {e}");
        e
    };
    match target {
        Target::Tcp(addr) => {
            match tokio::time::timeout(common.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => Some(pump::tcp(ws, tcp, framing, common, moved).await),
                Ok(Err(e)) => {
                    pump::refuse(ws, unreachable(e.to_string())).await;
                    None
                }
                Err(_) => {
                    pump::refuse(ws, unreachable("connect timed out".into())).await;
                    None
                }
            }
        }
        Target::Udp(addr) => match udp_socket(addr).await {
            Ok(sock) => Some(pump::udp(ws, sock, framing, common, moved).await),
            Err(e) => {
                pump::refuse(ws, unreachable(e.to_string())).await;
                None
            }
        },
        Target::WebSocket(_) => None,
    }
}

/// A UDP socket connected to `addr`.
async fn udp_socket(addr: &str) -> std::io::Result<UdpSocket> {
    let to: SocketAddr = lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    let sock = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await?;
    sock.connect(to).await?;
    Ok(sock)
}

//! The socket-listening side: each TCP client, or each UDP peer, gets its own WebSocket
//! to the target URL (through the proxy the environment names, as `tether connect`).

use super::pump::{self, End, Framing, Moved};
use super::routes::Target;
use super::{Args, Common};
use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tether::tls::ClientTrust;
use tether::ClientConfig;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// How long a UDP peer's session lives without a datagram either way, when
/// `--idle-timeout` is 0.
const UDP_IDLE: Duration = Duration::from_secs(60);

struct Side {
    url: String,
    /// Datagrams waiting for one UDP peer's WebSocket; more are dropped.
    udp_queue: usize,
    config: ClientConfig,
    common: Common,
}

pub(super) async fn run(args: Args, common: Common) -> anyhow::Result<ExitCode> {
    if !args.routes.is_empty() || args.routes_file.is_some() {
        bail!("--route and --routes-file are for a bridge listening for WebSocket (ws:// or wss://)");
    }
    let Some(to) = &args.to else {
        bail!("--to ws://… (or wss://…) is needed with --listen {}", args.listen)
    };
    let Target::WebSocket(url) = Target::parse(to)? else {
        bail!("--to {to:?}: a bridge listening on a socket forwards to ws:// or wss://");
    };
    let mut config = ClientConfig::default()
        .with_config(common.config.clone())
        .with_protocol("binary")
        .with_connect_timeout(common.connect_timeout);
    if let Some(ca) = &args.ca {
        let certs = tether::tls::load_certs(ca).map_err(|e| anyhow::anyhow!("{e}"))?;
        config = config.with_trust(ClientTrust::Ca(certs));
    }
    if let Some(token) = &args.access_token {
        config = config.with_header("Authorization", format!("Bearer {token}"));
    }
    let side = Arc::new(Side { url, udp_queue: args.udp_queue, config, common });
    let (scheme, addr) = args.listen.split_once("://").unwrap_or(("tcp", &args.listen));
    if scheme == "tcp" {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        tracing::info!("bridge listening on tcp://{} to {}", listener.local_addr()?, side.url);
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    tokio::spawn(tcp_client(tcp, peer, side.clone()));
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    let sock = Arc::new(UdpSocket::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?);
    tracing::info!("bridge listening on udp://{} to {}", sock.local_addr()?, side.url);
    udp_peers(sock, side).await
}

/// Opens the WebSocket for one client.
async fn open(side: &Side) -> Result<pump::Ws, String> {
    // The connect timeout covers the TCP connection; the handshake has its own.
    match tether::connect_direct(&side.url, &side.config).await {
        Ok((ws, _)) => Ok(ws),
        Err(e) => Err(e.to_string()),
    }
}

async fn tcp_client(tcp: TcpStream, peer: SocketAddr, side: Arc<Side>) {
    let ws = match open(&side).await {
        Ok(ws) => ws,
        Err(e) => {
            // The client sees its connection closed at once.
            tracing::warn!(%peer, url = %side.url, "cannot open the WebSocket: {e}");
            return;
        }
    };
    let framing = Framing::of(ws.protocol());
    let (started, moved) = (Instant::now(), Moved::default());
    let end = pump::tcp(ws, tcp, framing, &side.common, &moved).await;
    tracing::info!(
        %peer, url = %side.url, bytes_to_ws = moved.to_socket.load(Ordering::Relaxed),
        bytes_from_ws = moved.to_ws.load(Ordering::Relaxed), seconds = started.elapsed().as_secs_f64(),
        why = %end, "closed"
    );
}

type Peers = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>>;

/// Reads datagrams and hands each to its peer's session, starting one for a new peer.
async fn udp_peers(sock: Arc<UdpSocket>, side: Arc<Side>) -> anyhow::Result<ExitCode> {
    let peers: Peers = Arc::default();
    let mut buf = vec![0u8; 65536];
    let mut dropped = 0u64;
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("udp receive: {e}");
                continue;
            }
        };
        let datagram = Bytes::copy_from_slice(&buf[..n]);
        let mut map = peers.lock().unwrap_or_else(|e| e.into_inner());
        let tx = match map.get(&peer) {
            Some(tx) => tx.clone(),
            None => {
                let (tx, rx) = mpsc::channel(side.udp_queue);
                map.insert(peer, tx.clone());
                tokio::spawn(udp_session(peer, rx, sock.clone(), side.clone(), peers.clone()));
                tx
            }
        };
        drop(map);
        if tx.try_send(datagram).is_err() {
            dropped += 1;
            if dropped.is_power_of_two() {
                tracing::warn!(%peer, dropped, "datagrams dropped: the WebSocket does not keep up");
            }
        }
    }
}

/// One UDP peer's WebSocket: its datagrams become messages, messages become datagrams back.
async fn udp_session(
    peer: SocketAddr,
    mut rx: mpsc::Receiver<Bytes>,
    sock: Arc<UdpSocket>,
    side: Arc<Side>,
    peers: Peers,
) {
    let end = match open(&side).await {
        Ok(ws) => {
            let idle = side.common.idle_timeout.unwrap_or(UDP_IDLE);
            let framing = Framing::of(ws.protocol());
            let (mut sink, mut stream) = ws.split();
            let up = async {
                loop {
                    match tokio::time::timeout(idle, rx.recv()).await {
                        Ok(Some(d)) => {
                            if let Err(e) = sink.send(pump::message(d, framing)).await {
                                return End::WsFailed(e.to_string());
                            }
                        }
                        Ok(None) => return End::SocketClosed,
                        Err(_) => return End::Idle,
                    }
                }
            };
            let down = async {
                loop {
                    match pump::data(stream.next().await, framing, side.common.text) {
                        Ok(Some(b)) => {
                            let _ = sock.send_to(&b, peer).await;
                        }
                        Ok(None) => {}
                        Err(end) => return end,
                    }
                }
            };
            let end = tokio::select! { e = up => e, e = down => e };
            if let Ok(mut ws) = sink.reunite(stream) {
                pump::finish(&mut ws, &end).await;
            }
            Some(end)
        }
        Err(e) => {
            tracing::warn!(%peer, url = %side.url, "cannot open the WebSocket: {e}");
            None
        }
    };
    peers.lock().unwrap_or_else(|e| e.into_inner()).remove(&peer);
    if let Some(end) = end {
        tracing::info!(%peer, url = %side.url, why = %end, "udp session ended");
    }
}

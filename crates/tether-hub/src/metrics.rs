//! Counters for Prometheus `/metrics`, as plain atomics (no metrics crate).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The hub's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open hub connections (gauge).
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// WebSocket sessions opened over HTTP/1.1 (upgrade) since start.
    pub websocket_http1: AtomicU64,
    /// WebSocket sessions opened over HTTP/2 (extended CONNECT, RFC 8441) since start.
    pub websocket_http2: AtomicU64,
    /// Connections refused at the handshake or by the hub's limits (per IP).
    pub refused: AtomicU64,
    /// The listener's counts: connections refused with 503 or closed over its limits.
    pub listener: OnceLock<Arc<tether::ListenerStats>>,
    /// Subscriptions (gauge).
    pub subscriptions: AtomicU64,
    /// Publications accepted (clients and server API).
    pub published: AtomicU64,
    /// Events queued to subscribers.
    pub delivered: AtomicU64,
    /// Commands received from clients.
    pub commands: AtomicU64,
    /// Command errors sent to clients.
    pub command_errors: AtomicU64,
    /// Bytes received in client messages.
    pub bytes_in: AtomicU64,
    /// Bytes queued to clients (pushes and replies, as WebSocket payload and frame).
    pub bytes_out: AtomicU64,
    /// Connections disconnected as slow consumers.
    pub slow_disconnects: AtomicU64,
    /// Subscriptions that recovered every missed publication.
    pub recovered: AtomicU64,
    /// Subscriptions that asked to recover and could not.
    pub recovery_failed: AtomicU64,
    /// Server API requests.
    pub api_requests: AtomicU64,
    /// 1 while the broker is reachable, 0 while it is not (gauge; always 1 for memory).
    pub broker_up: AtomicU64,
    /// Commands refused because the broker could not be reached.
    pub broker_errors: AtomicU64,
}

impl Metrics {
    /// The Prometheus text exposition; `per_namespace` adds channel and subscriber counts.
    pub fn render(&self, per_namespace: &[(String, usize, usize)]) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metric("tether_connections", "gauge", "Open hub connections.", get(&self.connections));
        metric(
            "tether_connections_total",
            "counter",
            "Hub connections accepted.",
            get(&self.connections_total),
        );
        let (busy, dropped, held) = self
            .listener
            .get()
            .map_or((0, 0, 0), |l| (l.refused_busy(), l.dropped(), l.connections() as u64));
        metric(
            "tether_connections_refused_total",
            "counter",
            "Connections refused (handshake refusals, per-IP and connection limits).",
            get(&self.refused) + busy + dropped,
        );
        metric("tether_tcp_connections", "gauge", "TCP connections held, upgraded or not.", held);
        metric("tether_subscriptions", "gauge", "Channel subscriptions.", get(&self.subscriptions));
        metric("tether_publications_total", "counter", "Publications accepted.", get(&self.published));
        metric("tether_messages_out_total", "counter", "Events queued to subscribers.", get(&self.delivered));
        metric("tether_messages_in_total", "counter", "Commands received from clients.", get(&self.commands));
        metric("tether_command_errors_total", "counter", "Error replies sent.", get(&self.command_errors));
        metric("tether_bytes_in_total", "counter", "Bytes of client messages received.", get(&self.bytes_in));
        metric("tether_bytes_out_total", "counter", "Bytes queued to clients.", get(&self.bytes_out));
        metric(
            "tether_slow_consumer_disconnects_total",
            "counter",
            "Connections closed with 4008 for falling behind.",
            get(&self.slow_disconnects),
        );
        metric("tether_recovered_total", "counter", "Subscriptions recovered in full.", get(&self.recovered));
        metric(
            "tether_recovery_failed_total",
            "counter",
            "Subscriptions that could not recover.",
            get(&self.recovery_failed),
        );
        metric("tether_api_requests_total", "counter", "Server API requests.", get(&self.api_requests));
        metric("tether_broker_up", "gauge", "1 while the broker is reachable.", get(&self.broker_up));
        metric(
            "tether_broker_errors_total",
            "counter",
            "Commands refused because the broker was unreachable.",
            get(&self.broker_errors),
        );
        out.push_str("# HELP tether_websocket_sessions_total WebSocket sessions opened, by HTTP version.\n# TYPE tether_websocket_sessions_total counter\n");
        let _ =
            writeln!(out, "tether_websocket_sessions_total{{http=\"1.1\"}} {}", get(&self.websocket_http1));
        let _ = writeln!(out, "tether_websocket_sessions_total{{http=\"2\"}} {}", get(&self.websocket_http2));
        out.push_str("# HELP tether_namespace_channels Channels in use per namespace.\n# TYPE tether_namespace_channels gauge\n");
        for (ns, channels, _) in per_namespace {
            let _ = writeln!(out, "tether_namespace_channels{{namespace=\"{ns}\"}} {channels}");
        }
        out.push_str("# HELP tether_namespace_subscriptions Subscriptions per namespace.\n# TYPE tether_namespace_subscriptions gauge\n");
        for (ns, _, subs) in per_namespace {
            let _ = writeln!(out, "tether_namespace_subscriptions{{namespace=\"{ns}\"}} {subs}");
        }
        out
    }
}

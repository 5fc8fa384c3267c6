//! What a listener holds, counted against its limits: connections, handshakes in progress,
//! and refusals. Each admitted connection carries a [`Permit`] that gives its place back
//! when the connection (its socket, its driver task or its [`WebSocketStream`]) is dropped.
//!
//! [`WebSocketStream`]: crate::WebSocketStream

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Counts of a [`Listener`](crate::Listener)'s connections, shared with whoever reports
/// them (metrics, tests).
#[derive(Debug, Default)]
pub struct ListenerStats {
    connections: AtomicUsize,
    handshakes: AtomicUsize,
    refused_busy: AtomicU64,
    dropped: AtomicU64,
}

impl ListenerStats {
    /// Connections open now: from accept until the socket is closed, upgraded or not.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }
    /// Connections not yet upgraded (reading a request, serving plain HTTP, or being
    /// refused) now.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::Acquire)
    }
    /// Connections answered 503 since start because `max_connections` were open.
    pub fn refused_busy(&self) -> u64 {
        self.refused_busy.load(Ordering::Relaxed)
    }
    /// Connections closed without an answer since start because `max_handshakes` were in
    /// progress (nothing more can be held to answer them).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Which gauge a permit holds a place in.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Connection,
    Handshake,
}

/// A place in one of a listener's gauges, given back on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    stats: Arc<ListenerStats>,
    kind: Kind,
}

impl Permit {
    /// Takes a place if fewer than `max` are taken.
    pub(crate) fn try_take(stats: &Arc<ListenerStats>, kind: Kind, max: usize) -> Option<Self> {
        let gauge = gauge(stats, kind);
        gauge.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Self { stats: stats.clone(), kind })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        gauge(&self.stats, self.kind).fetch_sub(1, Ordering::AcqRel);
    }
}

fn gauge(stats: &ListenerStats, kind: Kind) -> &AtomicUsize {
    match kind {
        Kind::Connection => &stats.connections,
        Kind::Handshake => &stats.handshakes,
    }
}

pub(crate) fn count_refused_busy(stats: &ListenerStats) {
    stats.refused_busy.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn count_dropped(stats: &ListenerStats) {
    stats.dropped.fetch_add(1, Ordering::Relaxed);
}

/// Default handshakes in progress at most.
pub(crate) const DEFAULT_MAX_HANDSHAKES: usize = 1024;

/// The default connection limit: what the process's open-files limit leaves after the
/// handshakes in progress and 64 descriptors for everything else (logs, Redis, the
/// listener). 10,000 when the limit cannot be read (outside Linux).
pub(crate) fn default_max_connections() -> usize {
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    *DEFAULT.get_or_init(|| match open_files_limit() {
        Some(n) => n.saturating_sub(DEFAULT_MAX_HANDSHAKES.min(n / 4) + 64).max(16),
        None => 10_000,
    })
}

/// The soft `RLIMIT_NOFILE`, read from `/proc/self/limits` (no `unsafe` for `getrlimit`).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_stop_at_the_limit_and_give_their_place_back() {
        let stats = Arc::new(ListenerStats::default());
        let a = Permit::try_take(&stats, Kind::Connection, 2).unwrap();
        let _b = Permit::try_take(&stats, Kind::Connection, 2).unwrap();
        assert!(Permit::try_take(&stats, Kind::Connection, 2).is_none());
        assert_eq!((stats.connections(), stats.handshakes()), (2, 0));
        drop(a);
        assert!(Permit::try_take(&stats, Kind::Connection, 2).is_some());
    }

    #[test]
    fn default_connection_limit_fits_the_open_files_limit() {
        let max = default_max_connections();
        if let Some(n) = open_files_limit() {
            assert!(max + DEFAULT_MAX_HANDSHAKES.min(n / 4) < n, "{max} of {n}");
        }
        assert!(max >= 16);
    }
}

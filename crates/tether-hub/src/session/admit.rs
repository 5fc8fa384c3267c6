//! A connection's place among the server's connections: counted in total (what a shutdown
//! waits for) and per client address (`max_connections_per_ip`), given back when the
//! connection's session ends.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Counts of open connections, total and per address, released on drop of a [`Slot`].
#[derive(Default)]
pub(crate) struct Counts {
    total: AtomicUsize,
    /// By address, IPv4 as IPv4-mapped IPv6 (16 bytes in every [`Slot`], where an
    /// `IpAddr` takes 17 and pads the slot to 32).
    per_ip: Mutex<HashMap<Ipv6Addr, usize>>,
}

impl Counts {
    /// A place for a connection from `ip`, if fewer than `limit` from there are open.
    pub(crate) fn take_ip(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<Slot> {
        let ip = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        Some(Slot { counts: self.clone(), ip })
    }

    /// Connections open now.
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// One connection's place; given back on drop. 24 bytes: it is kept in every connection's
/// session.
pub(crate) struct Slot {
    counts: Arc<Counts>,
    ip: Ipv6Addr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::AcqRel);
        let mut map = self.counts.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Counts;
    use std::net::IpAddr;
    use std::sync::Arc;

    #[test]
    fn places_are_counted_per_address_and_given_back() {
        let counts = Arc::new(Counts::default());
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let a = counts.take_ip(v4, 2).expect("first");
        // The same address, IPv4 or IPv4-mapped, shares one count.
        let b = counts.take_ip(mapped, 2).expect("second");
        assert!(counts.take_ip(v4, 2).is_none(), "a third from one address is over the limit");
        let c = counts.take_ip(v6, 2).expect("another address");
        assert_eq!(counts.total(), 3);
        drop(a);
        let d = counts.take_ip(v4, 2).expect("a place given back is free again");
        drop((b, c, d));
        assert_eq!(counts.total(), 0);
        assert!(counts.per_ip.lock().unwrap().is_empty(), "no entry is left for a closed address");
        assert_eq!(std::mem::size_of::<super::Slot>(), 24);
    }
}

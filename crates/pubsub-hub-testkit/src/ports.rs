//! Choosing free loopback ports.
//!
//! Ports are drawn at random from outside the kernel's ephemeral range (so that
//! outgoing client connections, which take their local port from that range,
//! cannot grab a port between the moment we choose it and the moment
//! redis-server binds it), checked by binding a listener on 127.0.0.1, and
//! recorded in a process-wide set until the owning server is dropped (so that
//! two tests in the same process never get the same port, and a stopped server
//! keeps its port for a later restart). Races with other processes are still
//! possible; the caller detects them (redis-server fails to bind, or another
//! process answers on the port) and retries with a new port.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::{Mutex, MutexGuard};

/// Offset of the cluster bus port from the client port (redis default).
pub(crate) const CLUSTER_BUS_OFFSET: u16 = 10000;

/// Lowest port we ever hand out.
const MIN_PORT: u16 = 10000;

/// Ports we never hand out: the default Redis ports, which may belong to a
/// Redis that is not ours.
const FORBIDDEN: &[u16] = &[6379, 16379, 6380, 16380, 26379];

static RESERVED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

fn reserved() -> MutexGuard<'static, BTreeSet<u16>> {
    // A panic while holding the lock cannot leave the set inconsistent.
    RESERVED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ports held by one server (its client port and, for cluster nodes, its bus
/// port). Released from the process-wide set on drop.
#[derive(Debug)]
pub(crate) struct PortReservation {
    ports: Vec<u16>,
}

impl PortReservation {
    /// The client port.
    pub(crate) fn port(&self) -> u16 {
        self.ports[0]
    }
}

impl Drop for PortReservation {
    fn drop(&mut self) {
        let mut set = reserved();
        for p in &self.ports {
            set.remove(p);
        }
    }
}

/// The kernel's ephemeral (outgoing) port range, inclusive.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Reserves a free port (and `port + 10000` if `with_bus`). Panics if none is
/// found, which would mean the machine is out of ports.
pub(crate) fn reserve(with_bus: bool) -> PortReservation {
    let (eph_lo, eph_hi) = ephemeral_range();
    let max = if with_bus {
        u16::MAX - CLUSTER_BUS_OFFSET
    } else {
        u16::MAX
    };
    let needed = |p: u16| -> Vec<u16> {
        if with_bus {
            vec![p, p + CLUSTER_BUS_OFFSET]
        } else {
            vec![p]
        }
    };
    for attempt in 0..20_000u32 {
        let p = fastrand::u16(MIN_PORT..=max);
        let ports = needed(p);
        // Prefer ports outside the ephemeral range; give up on that
        // preference only if it cannot be met.
        let strict = attempt < 10_000;
        if ports
            .iter()
            .any(|q| FORBIDDEN.contains(q) || (strict && (eph_lo..=eph_hi).contains(q)))
        {
            continue;
        }
        {
            let mut set = reserved();
            if ports.iter().any(|q| set.contains(q)) {
                continue;
            }
            if !ports.iter().all(|q| bindable(*q)) {
                continue;
            }
            set.extend(ports.iter().copied());
        }
        return PortReservation { ports };
    }
    panic!("pubsub-hub-testkit: could not find a free port on 127.0.0.1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_unique_and_released() {
        let a = reserve(true);
        let b = reserve(false);
        assert_ne!(a.port(), b.port());
        assert!(!FORBIDDEN.contains(&a.port()));
        let (lo, hi) = ephemeral_range();
        assert!(!(lo..=hi).contains(&a.port()));
        assert!(!(lo..=hi).contains(&(a.port() + CLUSTER_BUS_OFFSET)));
        let pa = a.port();
        assert!(reserved().contains(&pa));
        assert!(reserved().contains(&(pa + CLUSTER_BUS_OFFSET)));
        drop(a);
        assert!(!reserved().contains(&pa));
        assert!(!reserved().contains(&(pa + CLUSTER_BUS_OFFSET)));
    }
}

//! Who may open a connection: a cap on open connections in all and one per
//! client address, so one client cannot take every slot. The binary and the
//! HTTP listener admit through this one gate, so they count clients alike.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// How long to wait after a failed accept (out of file descriptors and the
/// like) before trying again: the listener keeps serving.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// The next connection, or `None` once `stop` turns true (or its sender is
/// gone). Accept errors are logged and retried, never returned.
pub async fn next_connection(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return None,
        };
        match accepted {
            Ok(a) => return Some(a),
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Every connection slot is taken.
    Full,
    /// This client holds its share already.
    PerClient,
}

impl Refusal {
    /// The label counted in metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Full => "max_connections",
            Refusal::PerClient => "per_ip",
        }
    }
}

/// An admitted connection's places; dropping it gives them back.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    _slot: IpSlot,
}

/// The gate: `max` connections in all, `per_client` from one address.
pub struct Admission {
    permits: Arc<Semaphore>,
    clients: Arc<PerIp>,
    per_client: usize,
}

impl Admission {
    pub fn new(max: usize, per_client: usize) -> Admission {
        Admission { permits: Arc::new(Semaphore::new(max)), clients: Arc::new(PerIp::default()), per_client }
    }

    pub fn admit(&self, peer: IpAddr) -> Result<Admitted, Refusal> {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| Refusal::Full)?;
        let slot = self.clients.take(client_address(peer), self.per_client).ok_or(Refusal::PerClient)?;
        Ok(Admitted { _permit: permit, _slot: slot })
    }

    /// How many client addresses hold a connection.
    pub fn clients(&self) -> usize {
        self.clients.addresses()
    }
}

/// The address a connection counts against: IPv4 addresses as they are
/// (IPv4-mapped IPv6 ones too, so a dual-stack socket counts one client
/// once), IPv6 addresses by their /64, which one client usually holds whole.
pub fn client_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
        v4 => v4,
    }
}

/// Open connections per address; an entry lives while its count is nonzero,
/// so the map holds at most as many entries as there are connections.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`PerIp`]; given back on drop.
struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// A slot for one more connection from `ip`, unless it holds `max`.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            if *n == 0 {
                counts.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(IpSlot { table: self.clone(), ip })
    }

    fn addresses(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("a test address")
    }

    #[test]
    fn per_client_slots_are_bounded_and_given_back() {
        let gate = Admission::new(10, 2);
        let first = gate.admit(ip("10.0.0.1")).expect("room");
        let second = gate.admit(ip("::ffff:10.0.0.1")).expect("room: the same client");
        assert_eq!(gate.admit(ip("10.0.0.1")).err(), Some(Refusal::PerClient), "a third from the same client");
        let other = gate.admit(ip("10.0.0.2")).expect("another client is not affected");
        drop(first);
        let third = gate.admit(ip("10.0.0.1")).expect("a slot was given back");
        drop((second, third, other));
        assert_eq!(gate.clients(), 0, "no entry outlives its connections");
        assert_eq!(Admission::new(10, 0).admit(ip("10.0.0.1")).err(), Some(Refusal::PerClient));
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let gate = Admission::new(10, 1);
        let _held = gate.admit(ip("2001:db8:1:2::1")).expect("room");
        assert_eq!(gate.admit(ip("2001:db8:1:2:ffff::9")).err(), Some(Refusal::PerClient));
        assert!(gate.admit(ip("2001:db8:1:3::1")).is_ok(), "another /64 is another client");
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let a = client_address(ip("2001:db8:1:2:aaaa::1"));
        assert_eq!(a, client_address(ip("2001:db8:1:2:bbbb::9")));
        assert_ne!(a, client_address(ip("2001:db8:1:3::1")));
        assert_eq!(client_address(ip("::ffff:10.0.0.1")), client_address(ip("10.0.0.1")));
    }

    #[test]
    fn the_total_cap_holds_across_clients() {
        let gate = Admission::new(2, 5);
        let _a = gate.admit(ip("10.0.0.1")).expect("room");
        let _b = gate.admit(ip("10.0.0.2")).expect("room");
        assert_eq!(gate.admit(ip("10.0.0.3")).err(), Some(Refusal::Full));
        assert_eq!(gate.clients(), 2, "a refused connection holds no client slot");
    }
}

//! Finding peers by name, and the address this node tells them to reach it at.
//!
//! A peer is `host:port`; the host may be a name that resolves to many nodes (a compose
//! service, a Kubernetes headless Service). Gossip resolves the names again while it runs
//! (every minute) and gossips with every address, so a name stands for whoever answers to
//! it now. Here, at start, the node waits a little for its names to resolve, because
//! containers started together appear in DNS one after another, and works out the
//! address it advertises.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

/// How long a node waits at start for every peer name to resolve to an address.
pub const NAMES_WAIT: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_millis(250);

/// Resolves every peer, waiting up to `wait` until each resolves to at least one address;
/// returns all addresses found (those that did not resolve are left to gossip's own
/// resolving, which goes on while the node runs).
pub async fn resolve_peers(peers: &[String], wait: Duration) -> Vec<SocketAddr> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut found = Vec::new();
        let mut unresolved = Vec::new();
        for peer in peers {
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(peer.as_str()).await {
                Ok(addrs) => addrs.collect(),
                Err(_) => Vec::new(),
            };
            if addrs.is_empty() {
                unresolved.push(peer.as_str());
            }
            for addr in addrs {
                if !found.contains(&addr) {
                    found.push(addr);
                }
            }
        }
        if unresolved.is_empty() || tokio::time::Instant::now() >= deadline {
            if !unresolved.is_empty() {
                tracing::warn!(
                    peers = ?unresolved,
                    "peer names do not resolve yet; gossip keeps resolving them while the \
                     node runs"
                );
            }
            return found;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Returns the address to advertise when none is configured: the bound address, or for
/// an unspecified IP (0.0.0.0) the local address this host sends from towards its peers
/// (in a container: the container's address on the network its peers are on), or
/// loopback for a node without peers off this host.
pub async fn advertised_addr(local: SocketAddr, peers: &[SocketAddr]) -> String {
    if !local.ip().is_unspecified() {
        return local.to_string();
    }
    for peer in peers.iter().filter(|peer| !peer.ip().is_loopback()) {
        if let Some(ip) = source_ip_towards(*peer).await {
            return SocketAddr::new(ip, local.port()).to_string();
        }
    }
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port()).to_string()
}

/// The source address the kernel picks for packets to `peer` (a connected UDP socket
/// sends nothing until written to).
async fn source_ip_towards(peer: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).await.ok()?;
    socket.connect(peer).await.ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_resolves_to_every_address_and_ips_need_no_wait() {
        let found = resolve_peers(&["localhost:8000".into(), "127.0.0.9:9000".into()], RETRY).await;
        assert!(found.contains(&"127.0.0.1:8000".parse().unwrap()), "{found:?}");
        assert!(found.contains(&"127.0.0.9:9000".parse().unwrap()), "{found:?}");
    }

    #[tokio::test]
    async fn an_unresolvable_name_is_waited_for_then_left_to_gossip() {
        let started = tokio::time::Instant::now();
        let found = resolve_peers(&["no-such-host.invalid:8000".into()], RETRY * 2).await;
        assert!(found.is_empty());
        assert!(started.elapsed() >= RETRY * 2);
    }

    #[tokio::test]
    async fn the_advertised_address_is_one_peers_can_reach() {
        let local: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        assert_eq!(advertised_addr(local, &[]).await, "127.0.0.1:8000");
        let loopback_peer: SocketAddr = "127.0.0.1:8001".parse().unwrap();
        assert_eq!(advertised_addr(local, &[loopback_peer]).await, "127.0.0.1:8000");
        // Towards an outside address the kernel picks an interface's address, never
        // 0.0.0.0 (without a route at all, loopback stays).
        let outside: SocketAddr = "192.0.2.1:8000".parse().unwrap();
        let advertised = advertised_addr(local, &[outside]).await;
        assert!(!advertised.starts_with("0.0.0.0"), "{advertised}");
        let bound: SocketAddr = "10.1.2.3:8000".parse().unwrap();
        assert_eq!(advertised_addr(bound, &[outside]).await, "10.1.2.3:8000");
    }
}

//! Where the node that runs a search or tracker is reached: the one lookup of an
//! owner's address, for the relay and for requests sent to it.

use shoal_raft::{Cluster, NodeId};

use crate::gossip::Gossip;

/// Returns the address of member `node_id`'s API: as Raft's membership records it, or,
/// for a node not (yet) a member, as it gossips it. The one lookup of an owner.
pub async fn member_addr(cluster: &Cluster, gossip: &Gossip, node_id: NodeId) -> Option<String> {
    if let Some(addr) = cluster.member_addr(node_id) {
        return Some(addr);
    }
    let members = gossip.members().await;
    members.into_iter().find(|member| member.node_id == node_id).and_then(|member| member.api_addr)
}

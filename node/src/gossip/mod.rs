//! Membership by gossip (chitchat): who is out there, at which address, alive or not,
//! and what each node says of itself (Raft state, readiness, load).

pub mod membership;
pub mod transport;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    ProtocolVersion,
};
use serde::Serialize;
use shoal_raft::{ClusterSecret, NodeId};

/// The `host:port` of the node's HTTP API.
pub const KEY_API_ADDR: &str = "api_addr";
/// The node's instance id.
pub const KEY_INSTANCE_ID: &str = "instance_id";
/// The node's Raft state: `uninitialized`, `voter` or `learner`.
pub const KEY_RAFT: &str = "raft";
/// `true` when the node can serve reads and writes.
pub const KEY_READY: &str = "ready";
/// How busy the node's worker pool is: active plus queued parts.
pub const KEY_LOAD: &str = "load";
/// The member a node rejoins in place of, after `shoal reset-replica` (empty otherwise).
pub const KEY_REPLACES: &str = "replaces";
/// "1" when the node serves the Redis protocol.
pub const KEY_RESP: &str = "resp";
/// The format level the node reads: writes of a newer kind wait until every member
/// reads it (see docs/formats.md).
pub const KEY_READ_LEVEL: &str = "read_level";

/// The Raft state a node gossips before it belongs to a cluster.
pub const RAFT_UNINITIALIZED: &str = "uninitialized";
/// The Raft state a node gossips after it was removed from (or left) its cluster.
pub const RAFT_REMOVED: &str = "removed";

/// Gossip settings.
#[derive(Debug, Clone)]
pub struct GossipSettings {
    pub node_id: NodeId,
    /// The UDP address to bind.
    pub listen: SocketAddr,
    /// The UDP address peers gossip with this node at.
    pub advertise: SocketAddr,
    /// `host:port` gossip addresses of the peers to start from.
    pub seeds: Vec<String>,
    pub interval: Duration,
    /// Seals and opens every datagram (see `transport.rs`).
    pub secret: ClusterSecret,
    /// When this node started, in Unix milliseconds: datagrams sealed before are refused.
    pub started_ms: u64,
}

/// What gossip says of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub node_id: NodeId,
    pub api_addr: Option<String>,
    pub instance_id: Option<String>,
    pub raft: Option<String>,
    pub ready: bool,
    pub load: u64,
    /// The member this node rejoins in place of (see [`KEY_REPLACES`]).
    pub replaces: Option<NodeId>,
    pub alive: bool,
    /// Serves the Redis protocol (`--resp-listen`): pub/sub messages go there.
    pub resp: bool,
    /// The format level the node reads (`shoal_storage::codec::READ_LEVEL`); 1 when it
    /// does not say (builds before the key).
    pub read_level: u8,
    /// The gossip generation: the node's start time, so a restart is a new generation.
    pub generation: u64,
}

/// This node's gossip.
pub struct Gossip {
    handle: ChitchatHandle,
    node_id: NodeId,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

impl Gossip {
    /// Starts gossiping on UDP with `initial` keys set.
    pub async fn start(
        settings: GossipSettings,
        initial: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        let chitchat_id =
            ChitchatId::new(settings.node_id.to_string(), generation, settings.advertise);
        let config = ChitchatConfig {
            chitchat_id,
            cluster_id: "shoal".to_string(),
            gossip_interval: settings.interval,
            listen_addr: settings.listen,
            seed_nodes: settings.seeds,
            failure_detector_config: FailureDetectorConfig {
                initial_interval: settings.interval,
                max_interval: settings.interval * 20,
                dead_node_grace_period: Duration::from_secs(3600),
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V1,
        };
        let transport = transport::SealedUdp::new(settings.secret.clone(), settings.started_ms);
        let handle = spawn_chitchat(config, initial, &transport).await.map_err(|error| {
            anyhow::anyhow!("cannot gossip on UDP {}: {error}", settings.listen)
        })?;
        Ok(Self { handle, node_id: settings.node_id })
    }

    /// Sets this node's `key` to `value` (gossiped to the others).
    pub async fn set(&self, key: &str, value: impl ToString) {
        let value = value.to_string();
        self.handle
            .with_chitchat(|chitchat| {
                let state = chitchat.self_node_state();
                if state.get(key) != Some(value.as_str()) {
                    state.set(key, value.clone());
                }
            })
            .await;
    }

    /// Returns every node gossip knows of (the newest generation of each), this one included.
    pub async fn members(&self) -> Vec<Member> {
        self.handle
            .with_chitchat(|chitchat| {
                let live: Vec<ChitchatId> = chitchat.live_nodes().cloned().collect();
                let mut newest: BTreeMap<NodeId, Member> = BTreeMap::new();
                for (id, state) in chitchat.node_states() {
                    let Ok(node_id) = id.node_id.parse::<NodeId>() else { continue };
                    let member = Member {
                        node_id,
                        api_addr: state.get(KEY_API_ADDR).map(str::to_string),
                        instance_id: state.get(KEY_INSTANCE_ID).map(str::to_string),
                        raft: state.get(KEY_RAFT).map(str::to_string),
                        ready: state.get(KEY_READY) == Some("true"),
                        load: state.get(KEY_LOAD).and_then(|load| load.parse().ok()).unwrap_or(0),
                        replaces: state.get(KEY_REPLACES).and_then(|id| id.parse().ok()),
                        alive: live.contains(id),
                        resp: state.get(KEY_RESP) == Some("1"),
                        read_level: state
                            .get(KEY_READ_LEVEL)
                            .and_then(|level| level.parse().ok())
                            .unwrap_or(1),
                        generation: id.generation_id,
                    };
                    let keep = newest
                        .get(&node_id)
                        .is_none_or(|known| known.generation < member.generation);
                    if keep {
                        newest.insert(node_id, member);
                    }
                }
                newest.into_values().collect()
            })
            .await
    }

    /// Stops gossiping.
    pub fn shutdown(&self) {
        if let Err(error) = self.handle.initiate_shutdown() {
            tracing::debug!(%error, "gossip did not stop cleanly");
        }
    }
}

//! Raft RPCs over HTTP: postcard bodies POSTed to `/internal/raft/*` of the target node.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_storage::codec;

use crate::types::{Node, NodeId, TypeConfig};

/// The path of the append-entries RPC.
pub const APPEND_PATH: &str = "/internal/raft/append";
/// The path of the vote RPC.
pub const VOTE_PATH: &str = "/internal/raft/vote";
/// The path of the install-snapshot RPC.
pub const SNAPSHOT_PATH: &str = "/internal/raft/snapshot";

/// Creates one [`Connection`] per target node, all sharing one HTTP connection pool.
#[derive(Debug, Clone)]
pub struct Network {
    client: reqwest::Client,
}

impl Network {
    /// Returns a network whose connections give up connecting after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .build()
            .expect("an HTTP client without TLS always builds");
        Self { client }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Connection {
        Connection {
            client: self.client.clone(),
            target,
            base_url: format!("http://{}", node.addr),
        }
    }
}

/// Sends the Raft RPCs of this node to one target node.
#[derive(Debug)]
pub struct Connection {
    client: reqwest::Client,
    target: NodeId,
    base_url: String,
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let response = self
            .client
            .post(format!("{}{path}", self.base_url))
            .timeout(option.hard_ttl())
            .body(codec::encode(request))
            .send()
            .await
            .map_err(|error| {
                if error.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&error))
                } else {
                    RPCError::Network(NetworkError::new(&error))
                }
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body).into_owned();
            let error = std::io::Error::other(format!("{path} answered {status}: {text}"));
            return Err(RPCError::Network(NetworkError::new(&error)));
        }
        let outcome: Result<Resp, RaftError<NodeId, E>> = codec::decode(&body, "raft rpc response")
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        outcome.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(APPEND_PATH, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(SNAPSHOT_PATH, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(VOTE_PATH, &rpc, &option).await
    }
}

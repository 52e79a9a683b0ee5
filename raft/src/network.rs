//! Node-to-node calls over HTTP: postcard bodies POSTed to `/internal/*` of the target
//! node, signed with the cluster secret; openraft's network on top of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

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

use crate::auth::{ClusterSecret, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::lease::Leases;
use crate::types::{Node, NodeId, TypeConfig};
use crate::unix_millis;

/// The path of the append-entries RPC.
pub const APPEND_PATH: &str = "/internal/raft/append";
/// The path of the vote RPC.
pub const VOTE_PATH: &str = "/internal/raft/vote";
/// The path of the install-snapshot RPC.
pub const SNAPSHOT_PATH: &str = "/internal/raft/snapshot";

/// The path through which followers hand writes to the leader.
pub const FORWARD_PATH: &str = "/internal/raft/forward";
/// The path through which followers hand many writes to the leader at once.
pub const FORWARD_BATCH_PATH: &str = "/internal/raft/forward-batch";
/// The path through which followers ask the leader for a read index.
pub const READ_INDEX_PATH: &str = "/internal/raft/read-index";
/// The path through which membership changes reach the leader.
pub const MEMBERSHIP_PATH: &str = "/internal/cluster/membership";

/// Why an internal call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Nothing answered at the address.
    #[error("{addr} is unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The peer answered, but not with a usable response.
    #[error("{addr} failed: {reason}")]
    Failed { addr: String, reason: String },
}

/// Signed HTTP calls to other nodes' `/internal/*` endpoints, over one connection pool.
#[derive(Debug, Clone)]
pub struct InternalClient {
    http: reqwest::Client,
    secret: ClusterSecret,
}

impl InternalClient {
    /// Returns a client that signs with `secret` and gives up connecting after
    /// `connect_timeout`.
    pub fn new(secret: ClusterSecret, connect_timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .build()
            .expect("the HTTP client builds");
        Self { http, secret }
    }

    /// Returns the secret requests are signed with.
    pub fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    /// POSTs `body` to `path` on the node at `addr` (`host:port`), signed, and returns
    /// the response body of a 2xx answer.
    pub async fn post(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let (status, body) = self.relay_post(addr, path, body, timeout).await?;
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&body);
            let reason = format!("{path} answered {status}: {text}");
            return Err(CallError::Failed { addr: addr.to_string(), reason });
        }
        Ok(body)
    }

    /// Opens a signed, long-lived GET of `path_and_query` on the node at `addr` and
    /// returns the response to read as it streams; fails unless the answer is 2xx.
    pub async fn open_stream(
        &self,
        addr: &str,
        path_and_query: &str,
        connect_timeout: Duration,
    ) -> Result<reqwest::Response, CallError> {
        let timestamp = unix_millis();
        let signature = self.secret.sign("GET", path_and_query, timestamp, &[]);
        let request = self
            .http
            .get(format!("http://{addr}{path_and_query}"))
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .send();
        let response = tokio::time::timeout(connect_timeout, request)
            .await
            .map_err(|_| CallError::Unreachable {
                addr: addr.to_string(),
                reason: "timed out".into(),
            })?
            .map_err(|error| CallError::Unreachable {
                addr: addr.to_string(),
                reason: error.to_string(),
            })?;
        if !response.status().is_success() {
            let reason = format!("{path_and_query} answered {}", response.status());
            return Err(CallError::Failed { addr: addr.to_string(), reason });
        }
        Ok(response)
    }

    /// POSTs `body` (signed) and returns the answer's status and body, whatever the
    /// status: for handing a public request to the node that must answer it.
    pub async fn relay_post(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), CallError> {
        let call_error = |error: reqwest::Error| {
            // reqwest says "error sending request" for a refused connection and a timeout
            // alike: the causes tell them apart.
            let mut reason = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                reason.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            if error.is_connect() {
                CallError::Unreachable { addr: addr.to_string(), reason }
            } else {
                CallError::Failed { addr: addr.to_string(), reason }
            }
        };
        let timestamp = unix_millis();
        let signature = self.secret.sign("POST", path, timestamp, &body);
        let response = self
            .http
            .post(format!("http://{addr}{path}"))
            .timeout(timeout)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(call_error)?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await.map_err(call_error)?.to_vec()))
    }

    /// POSTs `request` (postcard) and decodes the postcard response.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let body = self.post(addr, path, codec::encode(request), timeout).await?;
        codec::decode(&body, "internal response").map_err(|error| CallError::Failed {
            addr: addr.to_string(),
            reason: error.to_string(),
        })
    }
}

/// Creates one [`Connection`] per target node, all sharing one [`InternalClient`].
#[derive(Debug, Clone)]
pub struct Network {
    client: InternalClient,
    leases: Arc<Leases>,
}

impl Network {
    /// Returns the Raft network over `client`, recording followers' acknowledgements in
    /// `leases`.
    pub(crate) fn new(client: InternalClient, leases: Arc<Leases>) -> Self {
        Self { client, leases }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Connection {
        Connection {
            client: self.client.clone(),
            leases: self.leases.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// Sends the Raft RPCs of this node to one target node.
#[derive(Debug)]
pub struct Connection {
    client: InternalClient,
    leases: Arc<Leases>,
    target: NodeId,
    addr: String,
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
        let outcome: Result<Result<Resp, RaftError<NodeId, E>>, CallError> =
            self.client.call(&self.addr, path, request, option.hard_ttl()).await;
        match outcome {
            Ok(outcome) => {
                outcome.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            Err(error @ CallError::Unreachable { .. }) => {
                Err(RPCError::Unreachable(Unreachable::new(&error)))
            }
            Err(error) => Err(RPCError::Network(NetworkError::new(&error))),
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let (vote, sent_at) = (rpc.vote, Instant::now());
        let response = self.call(APPEND_PATH, &rpc, &option).await?;
        // Any answer but a higher vote means the follower accepted this leader's vote
        // when the request arrived (after `sent_at`): the stuff of the leader's lease.
        if !matches!(response, AppendEntriesResponse::HigherVote(_)) {
            self.leases.acknowledged(self.target, &vote, sent_at);
        }
        Ok(response)
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

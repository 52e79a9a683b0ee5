//! Node-to-node calls over HTTP: postcard bodies POSTed to `/internal/*` of the target
//! node, signed with the cluster secret; openraft's network on top of them.

use std::collections::HashMap;
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

use crate::auth::{self, ClusterSecret, LineVerifier, RequestHead, SIGNATURE_HEADER};
use crate::lease::Leases;
use crate::types::{Node, NodeId, TypeConfig};

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
/// The path through which a node proves who it is (see [`InternalClient::identify`]).
pub const IDENTITY_PATH: &str = "/internal/cluster/identity";

/// How long a pooled connection to another node may idle before it is closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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
/// Every answer is checked: a caller gets a response only if a holder of the cluster
/// secret made it for the request it sent (see `auth.rs`).
#[derive(Debug, Clone)]
pub struct InternalClient {
    http: reqwest::Client,
    secret: ClusterSecret,
    /// Where each node is now, as gossip says: it outranks the address a caller holds
    /// (the one in the Raft membership may be an earlier container's or pod's).
    addresses: Arc<std::sync::RwLock<HashMap<NodeId, String>>>,
}

impl InternalClient {
    /// Returns a client that signs with `secret` and gives up connecting after
    /// `connect_timeout`.
    pub fn new(secret: ClusterSecret, connect_timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            // Below the nodes' idle keep-alive timeout (75 s by default), so that a pooled
            // connection is never reused just as its other end closes it.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()
            .expect("the HTTP client builds");
        Self { http, secret, addresses: Arc::default() }
    }

    /// Records where nodes are reached now (from gossip); calls to them go there.
    pub fn learn_addresses(&self, found: impl IntoIterator<Item = (NodeId, String)>) {
        let mut addresses = self.addresses.write().expect("the address book is never poisoned");
        for (node_id, addr) in found {
            if addresses.get(&node_id) != Some(&addr) {
                tracing::debug!(node_id, %addr, "node address learned");
                addresses.insert(node_id, addr);
            }
        }
    }

    /// Returns where to reach `target`: the address learned last, else `given`.
    fn route(&self, target: NodeId, given: &str) -> String {
        let addresses = self.addresses.read().expect("the address book is never poisoned");
        addresses.get(&target).cloned().unwrap_or_else(|| given.to_string())
    }

    /// Returns the secret requests are signed with.
    pub fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    /// POSTs `body` to `path` on node `target` at `addr` (`host:port`), signed, and
    /// returns the response body of a 2xx answer.
    pub async fn post(
        &self,
        addr: &str,
        target: NodeId,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let (status, body) = self.relay_post(addr, target, path, body, timeout).await?;
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&body);
            let reason = format!("{path} answered {status}: {text}");
            return Err(CallError::Failed { addr: addr.to_string(), reason });
        }
        Ok(body)
    }

    /// Opens a signed, long-lived GET of `path_and_query` on node `target` at `addr` and
    /// returns its lines as they stream; fails unless the answer is a signed 2xx.
    pub async fn open_stream(
        &self,
        addr: &str,
        target: NodeId,
        path_and_query: &str,
        connect_timeout: Duration,
    ) -> Result<SignedLines, CallError> {
        let addr = &self.route(target, addr);
        let head = RequestHead::new("GET", path_and_query, target, &[]);
        let mut request = self.http.get(format!("http://{addr}{path_and_query}"));
        for (name, value) in head.headers(&self.secret) {
            request = request.header(name, value);
        }
        let unreachable =
            |reason: String| CallError::Unreachable { addr: addr.to_string(), reason };
        let response = tokio::time::timeout(connect_timeout, request.send())
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|error| unreachable(error.to_string()))?;
        let status = response.status().as_u16();
        let signature = answer_signature(&response);
        let refused = |reason: String| CallError::Failed { addr: addr.to_string(), reason };
        if !(200..300).contains(&status) {
            // Not a stream: an error answer, signed whole.
            let body = response.bytes().await.map_err(|error| refused(error.to_string()))?;
            let verified = self.secret.verify_response(
                head.nonce,
                status,
                &auth::body_digest(&body),
                signature.as_deref(),
            );
            let reason = match verified {
                Ok(()) => format!("{path_and_query} answered {status}"),
                Err(error) => {
                    format!("{path_and_query} answered {status}, not signed by a member: {error}")
                }
            };
            return Err(refused(reason));
        }
        // A stream signs its status in the head and each line on its own.
        if let Err(error) =
            self.secret.verify_response(head.nonce, status, &STREAM_DIGEST, signature.as_deref())
        {
            return Err(refused(format!("{path_and_query}: not signed by a member: {error}")));
        }
        Ok(SignedLines {
            response,
            verifier: self.secret.line_verifier(head.nonce),
            buffer: Vec::new(),
        })
    }

    /// POSTs `body` (signed) to node `target` and returns the answer's status and body,
    /// whatever the status, once its signature is checked: for handing a public request
    /// to the node that must answer it.
    pub async fn relay_post(
        &self,
        addr: &str,
        target: NodeId,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), CallError> {
        let addr = &self.route(target, addr);
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
        let head = RequestHead::new("POST", path, target, &body);
        let mut request = self.http.post(format!("http://{addr}{path}")).timeout(timeout);
        for (name, value) in head.headers(&self.secret) {
            request = request.header(name, value);
        }
        let response = request.body(body).send().await.map_err(call_error)?;
        let status = response.status().as_u16();
        let signature = answer_signature(&response);
        let body = response.bytes().await.map_err(call_error)?.to_vec();
        let digest = auth::body_digest(&body);
        if let Err(error) =
            self.secret.verify_response(head.nonce, status, &digest, signature.as_deref())
        {
            // Whatever answered does not hold the secret (or our request did not reach
            // a member): its answer counts for nothing.
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            let reason =
                format!("{path} answered {status}, not signed by a member ({error}): {text}");
            return Err(CallError::Failed { addr: addr.to_string(), reason });
        }
        Ok((status, body))
    }

    /// POSTs `request` (postcard) to node `target` and decodes the postcard response.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        target: NodeId,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let body = self.post(addr, target, path, codec::encode(request), timeout).await?;
        codec::decode(&body, "internal response").map_err(|error| CallError::Failed {
            addr: addr.to_string(),
            reason: error.to_string(),
        })
    }

    /// Asks the node at `addr` to prove it holds the cluster secret and is node `target`:
    /// what a node must do before it becomes a member (see `gossip/membership.rs`).
    pub async fn identify(
        &self,
        addr: &str,
        target: NodeId,
        timeout: Duration,
    ) -> Result<Identity, CallError> {
        let identity: Identity = self.call(addr, target, IDENTITY_PATH, &(), timeout).await?;
        if identity.node_id != target {
            let reason = format!("claims to be node {}, not {target}", identity.node_id);
            return Err(CallError::Failed { addr: addr.to_string(), reason });
        }
        Ok(identity)
    }
}

/// Returns the signature an answer carries, if any.
pub fn answer_signature(response: &reqwest::Response) -> Option<String> {
    let signature = response.headers().get(SIGNATURE_HEADER)?;
    signature.to_str().ok().map(str::to_string)
}

/// What a node says of itself when asked to prove who it is (its answer is signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Identity {
    pub node_id: NodeId,
}

/// The body digest a streamed answer's head signature covers: its lines are signed one by
/// one instead.
pub const STREAM_DIGEST: [u8; 32] = [0; 32];

/// The lines of a signed streamed answer (see [`InternalClient::open_stream`]).
#[derive(Debug)]
pub struct SignedLines {
    response: reqwest::Response,
    verifier: LineVerifier,
    buffer: Vec<u8>,
}

impl SignedLines {
    /// Returns the payload of the next line (empty for a heartbeat), `Ok(None)` when the
    /// stream ended, or an error when it broke or a line fails its signature (the caller
    /// drops the stream then).
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, CallError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return match self.verifier.verify(&line) {
                    Ok(payload) => Ok(Some(payload.to_vec())),
                    Err(error) => Err(CallError::Failed {
                        addr: self.response.url().authority().to_string(),
                        reason: format!("a streamed line is not signed by a member: {error}"),
                    }),
                };
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => return Ok(None),
                Err(error) => {
                    let addr = self.response.url().authority().to_string();
                    return Err(CallError::Failed { addr, reason: error.to_string() });
                }
            }
        }
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
            self.client.call(&self.addr, self.target, path, request, option.hard_ttl()).await;
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

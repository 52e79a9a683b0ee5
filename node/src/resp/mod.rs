//! The Redis protocol endpoint (`--resp-listen`): RESP2, and RESP3 after `HELLO 3`, on
//! every node, over the same Raft state as the HTTP API and with its guarantees (DESIGN
//! §10). Existing Redis clients point `REDIS_URL` at any node.
//!
//! - `request.rs` reads requests (multibulk and inline, with limits checked from the
//!   headers), `reply.rs` writes replies; `glob.rs` matches Redis patterns.
//! - `connection.rs` runs one client: authentication, timeouts, pipelines (consecutive
//!   writes to distinct keys commit together), the subscriber mode; `admin.rs` answers
//!   the connection and server commands (`HELLO`, `CLIENT`, `INFO`, `COMMAND`, …).
//! - `commands.rs` checks the arguments of the string and key-space commands; `exec.rs`
//!   runs them through Raft and the read barrier; `classic.rs` shows sessions and
//!   searches made over HTTP under the classic key names.
//! - `pubsub.rs` delivers `PUBLISH` to subscribers on every node.

mod admin;
mod classic;
mod client;
mod commands;
mod connection;
mod exec;
pub mod glob;
pub mod pubsub;
pub mod reply;
pub mod request;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use shoal_raft::{Cluster, NodeId};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub use classic::Classic;
use exec::Keyspace;
use pubsub::PubSub;

use crate::config::RespConfig;
use crate::fabric::redis_feed::Message;
use crate::sse::{EventSink, ProgressEvent};

/// What every connection of the endpoint shares.
#[derive(Debug)]
pub struct Resp {
    config: RespConfig,
    keyspace: Keyspace,
    pubsub: Arc<PubSub>,
    node_id: NodeId,
    instance_id: String,
    started: Instant,
    tcp_port: u16,
    next_client_id: AtomicU64,
    clients: AtomicUsize,
    commands: AtomicU64,
    /// Whether every member reads the format level of plain keys' commands (see
    /// [`watch_format_levels`]).
    format_ready: Arc<AtomicBool>,
}

impl Resp {
    /// Returns the endpoint of node `node_id` on `cluster`.
    pub fn new(
        config: RespConfig,
        cluster: Cluster,
        pubsub: Arc<PubSub>,
        instance_id: String,
        tcp_port: u16,
    ) -> Self {
        let classic = Classic::new(&config.prefix);
        let node_id = cluster.node_id();
        let format_ready = Arc::new(AtomicBool::new(false));
        Self {
            config,
            keyspace: Keyspace { cluster, classic, format_ready: format_ready.clone() },
            pubsub,
            node_id,
            instance_id,
            started: Instant::now(),
            tcp_port,
            next_client_id: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
            commands: AtomicU64::new(0),
            format_ready,
        }
    }
}

/// Binds the endpoint's listener on `config.listen`.
pub async fn bind(config: &RespConfig) -> anyhow::Result<TcpListener> {
    let listen = if config.listen.starts_with(':') {
        format!("0.0.0.0{}", config.listen)
    } else {
        config.listen.clone()
    };
    TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen for Redis clients on {listen} (--resp-listen)"))
}

/// Serves Redis clients on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, resp: Arc<Resp>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = connection::stopped(&mut shutdown) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a Redis client failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let resp = resp.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            connection::run(stream, peer, resp, shutdown).await;
        });
    }
}

/// Returns a sink for the hub that sends every event this node publishes to the classic
/// channel `{prefix}:progress:{id}:events`, as Redis mode does, for subscribers on every
/// node.
pub fn classic_events(pubsub: Arc<PubSub>, classic: Classic) -> EventSink {
    let (sink, mut events) = mpsc::unbounded_channel::<(Arc<str>, Arc<ProgressEvent>)>();
    tokio::spawn(async move {
        while let Some((id, event)) = events.recv().await {
            let payload = Bytes::from(Message::of(&id, &event).payload());
            pubsub.publish(classic.events_channel(&id), payload).await;
        }
    });
    sink
}

/// The format level of the plain keys' commands (`Command::Kv`): a node that reads less
/// cannot apply them.
pub const KV_FORMAT_LEVEL: u8 = 2;

/// Keeps [`Resp`]'s `format_ready` up to date: true once every Raft member says in gossip
/// that it reads [`KV_FORMAT_LEVEL`], so that during a rolling upgrade from a build
/// without plain keys no write reaches a node that could not apply it (docs/formats.md).
pub async fn watch_format_levels(
    resp: Arc<Resp>,
    gossip: Arc<crate::gossip::Gossip>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = connection::stopped(&mut shutdown) => return,
        }
        let status = resp.keyspace.cluster.status();
        let members = gossip.members().await;
        let ready = status.voters.iter().chain(&status.learners).all(|node_id| {
            members
                .iter()
                .any(|member| member.node_id == *node_id && member.read_level >= KV_FORMAT_LEVEL)
        });
        if ready != resp.format_ready.swap(ready, Ordering::Relaxed) {
            tracing::info!(ready, "every member reads plain keys' commands: {ready}");
        }
    }
}

/// Counters of the endpoint, for `INFO`.
#[derive(Debug, Clone, Copy)]
pub struct RespStats {
    pub connected_clients: usize,
    pub commands_processed: u64,
}

impl Resp {
    /// Returns the endpoint's counters.
    pub fn stats(&self) -> RespStats {
        RespStats {
            connected_clients: self.clients.load(Ordering::Relaxed),
            commands_processed: self.commands.load(Ordering::Relaxed),
        }
    }
}

//! The relay of DESIGN §8: a node with SSE clients for a search that runs elsewhere opens
//! one stream from the owner and fans its events out to its local clients, keeping the
//! owner's event numbers so that `Last-Event-ID` works across nodes.
//!
//! Wire format of `GET /internal/searches/{id}/stream?attempt=A&after=S`: one JSON object
//! per line, `{"seq","kind","data"}`, the events of attempt A after S, ending after the
//! terminal one; an empty line now and then as a heartbeat. Every line is signed for the
//! request (`shoal_raft::auth::LineSigner`): lines that fail end the stream.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use shoal_raft::{unix_millis, Cluster, NodeId};

use crate::gossip::Gossip;
use crate::sse::{event, Hub, ProgressEvent, Topic};

/// How long a relay with no local subscriber lives on.
const IDLE_GRACE: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often an owner's stream sends an empty line when it has no event.
pub const HEARTBEAT: Duration = Duration::from_secs(3);
/// A stream silent this long (no event, no heartbeat) is taken for dead.
const SILENCE: Duration = Duration::from_secs(10);
/// How long a relayed topic stays after its terminal event, for late reconnects.
const FINISHED_LINGER: Duration = Duration::from_secs(60);

/// One event on the wire between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub seq: u64,
    pub kind: String,
    pub data: Value,
}

impl Frame {
    /// Returns the frame of `event` as JSON on one line (without its newline).
    pub fn json(event: &ProgressEvent) -> String {
        let frame = Frame {
            seq: event.seq,
            kind: event.kind.as_str().to_string(),
            data: event.data.clone(),
        };
        serde_json::to_string(&frame).expect("frames serialize")
    }
}

/// Returns the path of the owner's stream of attempt `attempt` of `id` after `after`.
pub fn stream_path(id: &str, attempt: u32, after: u64) -> String {
    format!("/internal/searches/{id}/stream?attempt={attempt}&after={after}")
}

/// Feeds `topic` (attempt `topic.attempt` of record `id`, run by `owner`) from the
/// owner until the terminal event, reconnecting as needed. Closes the topic when it
/// cannot go on: the record moved to another attempt, disappeared, or nobody listens.
pub fn spawn(
    cluster: Cluster,
    gossip: Arc<Gossip>,
    hub: Arc<Hub>,
    id: String,
    topic: Arc<Topic>,
    owner: NodeId,
) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let mut idle_since = None;
        loop {
            if relay_once(&cluster, &gossip, &id, &topic, owner).await {
                // Streams end by themselves after the terminal event; late reconnects
                // are served from memory for a while.
                tracing::debug!(search_id = %id, "relay reached the terminal event");
                hub.retire(&id, &topic, FINISHED_LINGER);
                return;
            }
            // Gone quiet: nobody listens, or the record changed under us.
            if topic.num_subscribers() == 0 {
                let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= IDLE_GRACE {
                    break;
                }
            } else {
                idle_since = None;
            }
            let record = cluster.reader().progress(&id, unix_millis()).ok().flatten();
            match record {
                Some(record) if record.attempt == topic.attempt && !record.status.is_terminal() => {
                }
                _ => break,
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        topic.close();
        hub.remove(&id, &topic);
    });
}

/// Streams from the owner once; returns true once the terminal event went through.
async fn relay_once(
    cluster: &Cluster,
    gossip: &Gossip,
    id: &str,
    topic: &Topic,
    owner: NodeId,
) -> bool {
    let Some(addr) = super::owner::member_addr(cluster, gossip, owner).await else {
        return false;
    };
    let path = stream_path(id, topic.attempt, topic.last_seq().await);
    let client = cluster.client();
    let mut lines = match client.open_stream(&addr, owner, &path, CONNECT_TIMEOUT).await {
        Ok(lines) => lines,
        Err(error) => {
            tracing::debug!(search_id = %id, %error, "relay could not reach the owner");
            return false;
        }
    };
    loop {
        let line = match tokio::time::timeout(SILENCE, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Err(error)) => {
                tracing::warn!(search_id = %id, %error, "relay stream broke");
                return false;
            }
            Ok(Ok(None)) | Err(_) => return false,
        };
        if line.is_empty() {
            continue; // heartbeat
        }
        let Ok(frame) = serde_json::from_slice::<Frame>(&line) else { continue };
        let Some(kind) = event::parse_received(&frame.kind, "relay") else { continue };
        let terminal = kind.is_terminal();
        if !topic.push_relayed(frame.seq, kind, frame.data).await {
            // Out of order: reconnect from what this topic has.
            return false;
        }
        if terminal {
            return true;
        }
    }
}

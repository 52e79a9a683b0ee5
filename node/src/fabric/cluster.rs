//! [`ClusterFabric`]: events and requests between the nodes of a Raft cluster. Each
//! search or tracker has an owner that numbers its events; other nodes relay them from
//! the owner's signed stream (`relay.rs`) and send cancels and tracker events to it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shoal_raft::{Cluster, NodeId, ProgressRecord, ProgressStatus};

use super::owner::member_addr;
use super::tracker_events::{self, Effect, TrackerEvent, TrackerPosted};
use super::{relay, EventFabric, FabricError};
use crate::gossip::Gossip;
use crate::sse::{Hub, RelayTopic, Topic};
use crate::store::{Store, StoreError};

/// Events and requests between the nodes of a Raft cluster.
#[derive(Debug, Clone)]
pub struct ClusterFabric {
    pub cluster: Cluster,
    pub gossip: Arc<Gossip>,
    pub hub: Arc<Hub>,
    pub store: Store,
    /// How long a call to the owner may take.
    pub request_timeout: Duration,
}

/// The answer of a tracker's owner to a forwarded event.
#[derive(Debug, serde::Deserialize)]
struct OwnerAnswer {
    seq: u64,
    #[serde(default)]
    status: Option<String>,
}

impl ClusterFabric {
    async fn owner_addr(&self, owner: NodeId) -> Result<String, FabricError> {
        member_addr(&self.cluster, &self.gossip, owner).await.ok_or(FabricError::OwnerUnknown)
    }
}

#[async_trait]
impl EventFabric for ClusterFabric {
    async fn relay_topic(
        &self,
        id: &str,
        record: &mut ProgressRecord,
        resume: Option<u64>,
    ) -> Result<Option<Arc<Topic>>, StoreError> {
        if record.owner == self.cluster.node_id() {
            // Owned here but not published here (this node restarted): follow the record.
            return Ok(None);
        }
        // Start where the client resumes, so that the owner replays exactly what it missed.
        let start = resume.filter(|seq| *seq <= record.last_seq).unwrap_or(record.last_seq);
        Ok(Some(match self.hub.open_relay(id, record.attempt, start) {
            RelayTopic::Existing(topic) => topic,
            RelayTopic::New(topic) => {
                let (cluster, gossip, hub) =
                    (self.cluster.clone(), self.gossip.clone(), self.hub.clone());
                relay::spawn(cluster, gossip, hub, id.to_string(), topic.clone(), record.owner);
                topic
            }
        }))
    }

    fn open_tracker(&self, id: &str, record: &ProgressRecord) {
        self.hub.open(id, record.attempt, record.last_seq);
    }

    async fn post_tracker_event(
        &self,
        id: &str,
        record: &ProgressRecord,
        event: TrackerEvent,
        effect: Effect,
    ) -> Result<TrackerPosted, FabricError> {
        if record.owner == self.cluster.node_id() {
            let posted =
                tracker_events::publish_here(&self.hub, &self.store, id, record, event, effect);
            return Ok(posted.await?);
        }
        // The tracker's events are numbered on the node that created it: hand it over.
        let addr = self.owner_addr(record.owner).await?;
        let body = serde_json::to_vec(&event).expect("events serialize");
        let path = format!("/internal/trackers/{id}/events");
        let client = self.cluster.client();
        let (status, answer) = client
            .relay_post(&addr, record.owner, &path, body, self.request_timeout)
            .await
            .map_err(|error| FabricError::OwnerUnreachable(error.to_string()))?;
        match status {
            200..=299 => {
                let answer: OwnerAnswer = serde_json::from_slice(&answer).map_err(|error| {
                    StoreError::Failed(format!("the tracker's owner answered {error}"))
                })?;
                let status = answer.status.as_deref().and_then(ProgressStatus::parse);
                Ok(TrackerPosted { seq: answer.seq, status })
            }
            // The owner's refusal (finished meanwhile, taken over, its own limits, no
            // leader where it is), passed on as it answered it.
            status => Err(FabricError::Owner { status, body: answer }),
        }
    }

    async fn cancel_elsewhere(&self, id: &str, record: &ProgressRecord) -> Result<(), FabricError> {
        let addr = self.owner_addr(record.owner).await?;
        let path = format!("/internal/searches/{id}/cancel");
        let client = self.cluster.client();
        client.post(&addr, record.owner, &path, Vec::new(), self.request_timeout).await.map_err(
            |error| {
                tracing::warn!(search_id = %id, %error, "forwarding a cancel to the owner failed");
                FabricError::OwnerUnreachable(error.to_string())
            },
        )?;
        Ok(())
    }
}

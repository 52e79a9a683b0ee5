//! The event fabric: how the live events of a search or tracker reach a node that does
//! not publish them, and how requests about one reach the node that runs it. One trait,
//! [`EventFabric`], two implementations: [`ClusterFabric`] (the owner's signed relay
//! stream and `/internal/*` calls to the owner, whose address comes from one lookup) and
//! [`RedisFabric`] (pub/sub channels under the classic key names, compatibility mode).
//! Handlers speak to the trait and never ask which mode runs.
//!
//! Below the fabric, `sse` keeps each node's topics and the follow loop; above it, the
//! API turns topics into SSE streams.

mod cluster;
mod owner;
mod redis;
pub mod redis_feed;
pub mod relay;
pub mod tracker_events;

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
pub use cluster::ClusterFabric;
pub use redis::RedisFabric;
use shoal_raft::ProgressRecord;
pub use tracker_events::{Effect, InvalidEvent, TrackerEvent, TrackerPosted};

use crate::sse::Topic;
use crate::store::StoreError;

/// Why the fabric could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FabricError {
    /// The state store refused or could not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No address is known for the node that runs it (it left, or gossip has not heard
    /// of it yet).
    #[error("the node that runs it is unknown")]
    OwnerUnknown,
    /// The node that runs it did not answer.
    #[error("the node that runs it did not answer: {0}")]
    OwnerUnreachable(String),
    /// The node that runs it refused the request: its answer, to pass on as it is.
    #[error("the node that runs it answered {status}")]
    Owner { status: u16, body: Vec<u8> },
}

impl From<shoal_raft::Rejection> for FabricError {
    fn from(rejection: shoal_raft::Rejection) -> Self {
        FabricError::Store(rejection.into())
    }
}

/// How live events and requests about searches and trackers travel between nodes.
#[async_trait]
pub trait EventFabric: Debug + Send + Sync {
    /// Returns the topic through which this node's clients follow unfinished `record` of
    /// `id` from `resume` (the client's `Last-Event-ID` sequence number, when it has one),
    /// when this node does not publish its events itself: a topic fed from wherever they
    /// are published, opened now if needed. `None`: no events come here; follow the
    /// replicated record. May read the record again (into `record`), so that it and the
    /// topic's first event agree.
    async fn relay_topic(
        &self,
        id: &str,
        record: &mut ProgressRecord,
        resume: Option<u64>,
    ) -> Result<Option<Arc<Topic>>, StoreError>;

    /// Opens the topic of a tracker just created on this node, if its events are
    /// numbered here.
    fn open_tracker(&self, id: &str, record: &ProgressRecord);

    /// Publishes tracker event `effect` posted on this node, wherever the tracker's events
    /// are numbered.
    async fn post_tracker_event(
        &self,
        id: &str,
        record: &ProgressRecord,
        event: TrackerEvent,
        effect: Effect,
    ) -> Result<TrackerPosted, FabricError>;

    /// Asks the node that runs unfinished search `id` (not this one) to cancel it.
    async fn cancel_elsewhere(&self, id: &str, record: &ProgressRecord) -> Result<(), FabricError>;
}

/// The event fabric of a node.
pub type Fabric = Arc<dyn EventFabric>;

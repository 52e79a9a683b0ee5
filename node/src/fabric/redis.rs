//! [`RedisFabric`]: events through Redis pub/sub (compatibility mode, DESIGN §7). Every
//! node relays from the channels (`redis_feed.rs`); tracker events are numbered in the
//! record, atomically, on whichever node takes them; cancels go out on a channel that
//! the node running the search hears.

use std::sync::Arc;

use async_trait::async_trait;
use shoal_raft::{ProgressRecord, Rejection};

use super::redis_feed::RedisFeed;
use super::tracker_events::{Effect, TrackerEvent, TrackerPosted};
use super::{EventFabric, FabricError};
use crate::sse::{Hub, ProgressEvent, RelayTopic, Topic};
use crate::store::{StateStore, StoreError};

/// Events through Redis pub/sub.
#[derive(Debug, Clone)]
pub struct RedisFabric {
    pub feed: Arc<RedisFeed>,
    pub hub: Arc<Hub>,
}

#[async_trait]
impl EventFabric for RedisFabric {
    async fn relay_topic(
        &self,
        id: &str,
        record: &mut ProgressRecord,
        _resume: Option<u64>,
    ) -> Result<Option<Arc<Topic>>, StoreError> {
        Ok(Some(match self.hub.open_relay(id, record.attempt, record.last_seq) {
            RelayTopic::Existing(topic) => topic,
            RelayTopic::New(topic) => {
                self.feed.relay(self.hub.clone(), id.to_string(), topic.clone()).await?;
                // Subscribed now: what changed before is in the record read again, what
                // changes after comes as events.
                *record =
                    self.feed.store().progress(id).await?.ok_or(Rejection::ProgressNotFound)?;
                topic.advance_to(record.last_seq).await;
                topic
            }
        }))
    }

    fn open_tracker(&self, _id: &str, _record: &ProgressRecord) {
        // Events are numbered in the record, whichever node takes them: no topic here.
    }

    async fn post_tracker_event(
        &self,
        id: &str,
        record: &ProgressRecord,
        event: TrackerEvent,
        effect: Effect,
    ) -> Result<TrackerPosted, FabricError> {
        let store = self.feed.store();
        let (seq, _) = store.next_tracker_event(id, record.attempt, effect.update()).await?;
        let data = effect.data(event.data);
        let published = ProgressEvent { attempt: record.attempt, seq, kind: effect.kind, data };
        self.feed.publish(id, published);
        Ok(TrackerPosted { seq, status: effect.status })
    }

    async fn cancel_elsewhere(
        &self,
        id: &str,
        _record: &ProgressRecord,
    ) -> Result<(), FabricError> {
        // Whichever node runs it hears this on the cancel channel.
        Ok(self.feed.cancel(id).await?)
    }
}

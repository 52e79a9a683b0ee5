//! Events through Redis pub/sub (compatibility mode, DESIGN §7): every event a node
//! publishes goes to `{prefix}:progress:{id}:events`; a node with SSE clients for a search
//! or tracker it does not publish subscribes to that channel and fans the events out.
//!
//! Wire format of a message: `{"id","attempt","seq","event","data"}`.
//!
//! Pub/sub loses what is published while a connection is down, so a relayed topic takes
//! events after gaps, and a watcher ends its streams from the stored record when the
//! terminal event was lost.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use shoal_storage::RedisMessage;
use tokio::sync::mpsc;

use crate::jobs::Searches;
use crate::sse::{event, EventSink, Hub, ProgressEvent, Topic};
use crate::store::{RedisStore, StateStore, StoreError, Unavailable};

/// How long a relayed topic with no local subscriber lives on.
const IDLE_GRACE: Duration = Duration::from_secs(5);
/// How often a relayed topic's watcher looks at its subscribers and record.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// How long a finished record may go without its terminal event before the watcher
/// sends it from the record.
const TERMINAL_GRACE: Duration = Duration::from_secs(2);
/// How long a relayed topic stays after its terminal event, for late reconnects.
const FINISHED_LINGER: Duration = Duration::from_secs(60);
/// Most events published in one round trip.
const PUBLISH_BATCH: usize = 256;

/// One event on a Redis channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub attempt: u32,
    pub seq: u64,
    pub event: String,
    pub data: Value,
}

impl Message {
    /// Returns the message of `event` of search or tracker `id`.
    pub fn of(id: &str, event: &ProgressEvent) -> Self {
        Message {
            id: id.to_string(),
            attempt: event.attempt,
            seq: event.seq,
            event: event.kind.as_str().to_string(),
            data: event.data.clone(),
        }
    }

    /// Returns the message as published: JSON.
    pub fn payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("messages serialize")
    }
}

/// The Redis side of the hub.
#[derive(Debug)]
pub struct RedisFeed {
    state: RedisStore,
    sink: EventSink,
}

impl RedisFeed {
    /// Starts publishing what goes into the returned feed's sink, in order.
    pub fn start(state: RedisStore) -> Arc<Self> {
        let (sink, events) = mpsc::unbounded_channel();
        tokio::spawn(publish(state.clone(), events));
        Arc::new(Self { state, sink })
    }

    /// Returns the Redis state this feed publishes beside.
    pub fn store(&self) -> &RedisStore {
        &self.state
    }

    /// Returns the sink that owner topics publish into.
    pub fn sink(&self) -> EventSink {
        self.sink.clone()
    }

    /// Publishes `event` of `id`, numbered elsewhere (a tracker event posted here).
    pub fn publish(&self, id: &str, event: ProgressEvent) {
        let _ = self.sink.send((Arc::from(id), Arc::new(event)));
    }

    /// Asks whichever node runs search `id` to cancel it.
    pub async fn cancel(&self, id: &str) -> Result<(), StoreError> {
        let message = [(self.state.keys.cancel_channel(), id.as_bytes().to_vec())];
        self.state.redis.publish(&message).await.map_err(|error| {
            Unavailable::Redis(format!("publishing a cancel failed: {error}")).into()
        })
    }

    /// Subscribes to the cancel channel and routes every message received to its topic.
    pub async fn serve(
        self: &Arc<Self>,
        hub: Arc<Hub>,
        searches: Arc<Searches>,
        mut messages: mpsc::UnboundedReceiver<RedisMessage>,
    ) -> anyhow::Result<()> {
        let cancel_channel = self.state.keys.cancel_channel();
        self.state.redis.subscribe(&cancel_channel).await?;
        let state = self.state.clone();
        tokio::spawn(async move {
            while let Some(message) = messages.recv().await {
                if message.channel == cancel_channel {
                    let id = String::from_utf8_lossy(&message.payload);
                    if searches.cancel(&id) {
                        tracing::info!(search_id = %id, "cancelled through redis");
                    }
                    continue;
                }
                let Some(id) = state.keys.channel_id(&message.channel) else { continue };
                let Some(topic) = hub.get(id).filter(|topic| topic.is_relayed()) else { continue };
                let Ok(message) = serde_json::from_slice::<Message>(&message.payload) else {
                    tracing::debug!(channel = %message.channel, "unreadable event message");
                    continue;
                };
                let Some(kind) = event::parse_received(&message.event, "redis") else {
                    continue;
                };
                if message.attempt == topic.attempt {
                    topic.push_lenient(message.seq, kind, message.data).await;
                }
            }
        });
        Ok(())
    }

    /// Subscribes new relayed `topic` of record `id` to its channel, and feeds it from
    /// there until its terminal event, or until nobody listens any more. Answers once
    /// subscribed: what is published from then on reaches the topic.
    pub async fn relay(
        self: &Arc<Self>,
        hub: Arc<Hub>,
        id: String,
        topic: Arc<Topic>,
    ) -> Result<(), StoreError> {
        let channel = self.state.keys.events_channel(&id);
        if let Err(error) = self.state.redis.subscribe(&channel).await {
            topic.close();
            hub.remove(&id, &topic);
            return Err(
                Unavailable::Redis(format!("cannot subscribe to {channel}: {error}")).into()
            );
        }
        let feed = self.clone();
        tokio::spawn(async move {
            let finished = watch(&feed.state, &id, &topic).await;
            let _ = feed.state.redis.unsubscribe(&channel).await;
            if finished {
                hub.retire(&id, &topic, FINISHED_LINGER);
            } else {
                topic.close();
                hub.remove(&id, &topic);
            }
        });
        Ok(())
    }
}

/// Watches a relayed topic; returns true once it has its terminal event, false when it
/// should stop (nobody listens, or the record moved on or disappeared).
async fn watch(store: &RedisStore, id: &str, topic: &Topic) -> bool {
    let mut idle_since = None;
    let mut finished_since = None;
    loop {
        if topic.is_finished().await {
            return true;
        }
        if topic.num_subscribers() == 0 {
            let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= IDLE_GRACE {
                return false;
            }
        } else {
            idle_since = None;
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
        let record = match store.progress(id).await {
            Ok(Some(record)) => record,
            Ok(None) => return false,
            // Redis is away: keep the streams; the subscription comes back with it.
            Err(_) => continue,
        };
        if record.attempt != topic.attempt {
            return false;
        }
        if !record.status.is_terminal() {
            continue;
        }
        // The terminal event may have been published while the connection was down.
        let since = *finished_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= TERMINAL_GRACE && !topic.is_finished().await {
            let Some(ending) = ProgressEvent::ending_of(&record) else { continue };
            let seq = record.last_seq.max(topic.last_seq().await + 1);
            topic.push_lenient(seq, ending.kind, ending.data).await;
        }
    }
}

/// Publishes the sink's events in order, many per round trip. While Redis is down they
/// are dropped, as pub/sub would; the records keep the milestones.
async fn publish(
    state: RedisStore,
    mut events: mpsc::UnboundedReceiver<(Arc<str>, Arc<ProgressEvent>)>,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut failing = false;
    while events.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let messages: Vec<(String, Vec<u8>)> = batch
            .drain(..)
            .map(|(id, event)| (state.keys.events_channel(&id), Message::of(&id, &event).payload()))
            .collect();
        match state.redis.publish(&messages).await {
            Ok(()) => failing = false,
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, dropped = messages.len(), "publishing events to redis failed");
                }
                failing = true;
            }
        }
    }
}

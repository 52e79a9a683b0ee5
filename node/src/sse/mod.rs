//! The local event hub: one [`Topic`] per search or tracker this node runs.
//!
//! Contract: a topic numbers its events 1, 2, 3… and publishes them in that order, under
//! one lock; a subscriber takes its replay and its live receiver under the same lock, so
//! it sees every event after its resume point exactly once.

pub mod event;
pub mod follow;
pub mod sweep;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use event::{terminal_data, EventKind, ProgressEvent};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

/// Live events a slow subscriber may fall behind by before it re-reads the history.
const LIVE_BUFFER: usize = 256;
/// Events a topic keeps for resuming clients, at most this many and this much memory
/// (as [`footprint`] estimates it); the oldest go first, and a client resuming before
/// the kept ones gets a fresh snapshot instead.
const MAX_HISTORY: usize = 10_000;
const MAX_HISTORY_BYTES: usize = 1024 * 1024;

/// Where the events of the topics this node publishes also go (Redis, in compatibility
/// mode), with the id of their search or tracker, in publishing order.
pub type EventSink = mpsc::UnboundedSender<(Arc<str>, Arc<ProgressEvent>)>;

/// The events of one attempt of one search or tracker.
#[derive(Debug)]
pub struct Topic {
    pub attempt: u32,
    id: Arc<str>,
    /// Fed by another node's events (a relay) rather than published here.
    relayed: bool,
    sink: Option<EventSink>,
    log: tokio::sync::Mutex<TopicLog>,
    /// Made by the first subscriber: a channel holds its `LIVE_BUFFER` slots from the
    /// start (about 12 KiB), and most topics (trackers nobody follows) never get one.
    /// Set and sent on under `log`'s lock, so a subscriber misses nothing.
    live: OnceLock<broadcast::Sender<Arc<ProgressEvent>>>,
    /// Turns true when no more events will come through this topic although none was
    /// terminal (a relay that lost its source): streams end and clients reconnect.
    /// Made by the first stream that watches for it, like `live` (a watch channel takes
    /// about half a KiB); `is_closed` says it for those that come later.
    closed: OnceLock<tokio::sync::watch::Sender<bool>>,
    is_closed: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct TopicLog {
    /// Events up to this one are not in `history` (before the topic opened, or dropped).
    base_seq: u64,
    last_seq: u64,
    /// The kept events, oldest first, each with its [`footprint`].
    history: VecDeque<(usize, Arc<ProgressEvent>)>,
    /// The sum of the kept events' footprints.
    history_bytes: usize,
    finished: bool,
}

/// What a new subscriber gets: the events to replay and a receiver for the rest.
#[derive(Debug)]
pub struct Subscription<T> {
    /// The sequence number the caller's `read` saw the state at.
    pub seq: u64,
    /// What `read` returned, taken under the topic's lock.
    pub state: T,
    /// Whether `replay` continues from the requested point (else send a snapshot).
    pub resumed: bool,
    pub replay: Vec<Arc<ProgressEvent>>,
    pub live: broadcast::Receiver<Arc<ProgressEvent>>,
    /// Whether the terminal event has been published (in `replay` or before it).
    pub finished: bool,
}

impl Topic {
    fn new(id: &str, attempt: u32, last_seq: u64, relayed: bool, sink: Option<EventSink>) -> Self {
        let log = TopicLog { base_seq: last_seq, last_seq, ..TopicLog::default() };
        let id = Arc::from(id);
        let (live, closed, is_closed) = (OnceLock::new(), OnceLock::new(), Default::default());
        let log = tokio::sync::Mutex::new(log);
        Self { attempt, id, relayed, sink, log, live, closed, is_closed }
    }

    /// Returns whether this topic relays events published elsewhere.
    pub fn is_relayed(&self) -> bool {
        self.relayed
    }

    /// Publishes an event that is not recorded in Raft (per-page progress); `None` once
    /// the terminal event is out, as nothing may follow it.
    pub async fn publish(&self, kind: EventKind, data: Value) -> Option<u64> {
        let mut log = self.log.lock().await;
        (!log.finished).then(|| self.push(&mut log, kind, data))
    }

    /// Publishes a milestone after `record(seq)` stored it durably and returned the
    /// event's data; if that fails, nothing is published and the number is not used.
    /// `Ok(None)`: the terminal event is out already; `record` is not called.
    pub async fn publish_durable<F, Fut, E>(
        &self,
        kind: EventKind,
        record: F,
    ) -> Result<Option<u64>, E>
    where
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = Result<Value, E>>,
    {
        let mut log = self.log.lock().await;
        if log.finished {
            return Ok(None);
        }
        let data = record(log.last_seq + 1).await?;
        Ok(Some(self.push(&mut log, kind, data)))
    }

    fn push(&self, log: &mut TopicLog, kind: EventKind, data: Value) -> u64 {
        log.last_seq += 1;
        let event =
            Arc::new(ProgressEvent { attempt: self.attempt, seq: log.last_seq, kind, data });
        log.finished |= event.is_terminal();
        let size = footprint(&event.data);
        log.history.push_back((size, event.clone()));
        log.history_bytes += size;
        while log.history.len() > 1
            && (log.history.len() > MAX_HISTORY || log.history_bytes > MAX_HISTORY_BYTES)
        {
            let (size, dropped) = log.history.pop_front().expect("more than one event");
            log.history_bytes -= size;
            log.base_seq = dropped.seq;
        }
        if let Some(sink) = &self.sink {
            // The sink's task outlives the topics; if it is gone, the node is stopping.
            let _ = sink.send((self.id.clone(), event.clone()));
        }
        // No channel or no receiver is fine: nobody is watching right now.
        if let Some(live) = self.live.get() {
            let _ = live.send(event);
        }
        log.last_seq
    }

    /// Subscribes after event `after` (`None`: from now on, with `read` giving the state
    /// that the events after it build on).
    pub async fn subscribe<T>(
        &self,
        after: Option<u64>,
        read: impl FnOnce() -> T,
    ) -> Subscription<T> {
        let log = self.log.lock().await;
        // A resume point older than the history (or newer than anything published) cannot
        // be replayed exactly: the subscriber starts over from a snapshot.
        let after = after.filter(|after| (log.base_seq..=log.last_seq).contains(after));
        let replay = match after {
            Some(after) => log.events_after(after),
            None => Vec::new(),
        };
        let live = self.live.get_or_init(|| broadcast::channel(LIVE_BUFFER).0);
        Subscription {
            seq: log.last_seq,
            state: read(),
            resumed: after.is_some(),
            replay,
            live: live.subscribe(),
            finished: log.finished,
        }
    }

    /// Publishes an event another node numbered (relayed from the owner), keeping its
    /// number; returns false if it does not follow the last one (a duplicate or a gap).
    pub async fn push_relayed(&self, seq: u64, kind: EventKind, data: Value) -> bool {
        let mut log = self.log.lock().await;
        if log.finished || seq != log.last_seq + 1 {
            return false;
        }
        self.push(&mut log, kind, data);
        true
    }

    /// Publishes an event relayed through Redis pub/sub, which may lose messages while a
    /// connection is down: anything after the last event goes, gaps included (the record
    /// has the durable milestones); returns false for a duplicate or late one.
    pub async fn push_lenient(&self, seq: u64, kind: EventKind, data: Value) -> bool {
        let mut log = self.log.lock().await;
        if log.finished || seq <= log.last_seq {
            return false;
        }
        log.last_seq = seq - 1;
        self.push(&mut log, kind, data);
        true
    }

    /// Moves a topic that has published nothing yet to the point of a record read after
    /// it opened, so that the events after that point follow on.
    pub async fn advance_to(&self, seq: u64) {
        let mut log = self.log.lock().await;
        if log.history.is_empty() && seq > log.last_seq {
            log.base_seq = seq;
            log.last_seq = seq;
        }
    }

    /// Returns whether the terminal event has been published.
    pub async fn is_finished(&self) -> bool {
        self.log.lock().await.finished
    }

    /// Returns the last event number published.
    pub async fn last_seq(&self) -> u64 {
        self.log.lock().await.last_seq
    }

    /// Ends every stream of this topic without a terminal event (see `closed`).
    pub fn close(&self) {
        self.is_closed.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(closed) = self.closed.get() {
            closed.send_replace(true);
        }
    }

    /// Returns a receiver that turns true when the topic is closed.
    pub fn closed(&self) -> tokio::sync::watch::Receiver<bool> {
        let is_closed = || self.is_closed.load(std::sync::atomic::Ordering::SeqCst);
        let closed = self.closed.get_or_init(|| tokio::sync::watch::channel(is_closed()).0);
        // Closed between the check above and the channel's making: say so now.
        if is_closed() {
            closed.send_replace(true);
        }
        closed.subscribe()
    }

    /// Returns how many subscribers are listening now.
    pub fn num_subscribers(&self) -> usize {
        self.live.get().map_or(0, broadcast::Sender::receiver_count)
    }

    /// Returns the events after `after`, for a subscriber that fell behind.
    pub async fn since(&self, after: u64) -> Vec<Arc<ProgressEvent>> {
        self.log.lock().await.events_after(after)
    }

    /// Returns how many events the topic keeps, and their footprint.
    pub async fn history_size(&self) -> (usize, usize) {
        let log = self.log.lock().await;
        (log.history.len(), log.history_bytes)
    }
}

impl TopicLog {
    fn events_after(&self, after: u64) -> Vec<Arc<ProgressEvent>> {
        self.history.iter().filter(|(_, event)| event.seq > after).map(|(_, e)| e.clone()).collect()
    }
}

/// Returns about how much memory `value` holds: its nodes, strings and map entries. Not
/// its JSON size: `[0,0,…]` takes 2 bytes of JSON and 32 of memory per element.
fn footprint(value: &Value) -> usize {
    const NODE: usize = std::mem::size_of::<Value>();
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => NODE,
        Value::String(text) => NODE + text.len(),
        Value::Array(items) => NODE + items.iter().map(footprint).sum::<usize>(),
        // A B-tree entry: the key's string and heap text, the value, and node overhead.
        Value::Object(map) => {
            NODE + map.iter().map(|(key, item)| 48 + key.len() + footprint(item)).sum::<usize>()
        }
    }
}

/// The topics of the searches and trackers this node runs.
#[derive(Debug, Default)]
pub struct Hub {
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    sink: Option<EventSink>,
}

/// What `Hub::open_relay` found.
#[derive(Debug)]
pub enum RelayTopic {
    /// A topic for the record was there already (local, or relayed by another request).
    Existing(Arc<Topic>),
    /// A new topic the caller must feed from the owner.
    New(Arc<Topic>),
}

impl Hub {
    /// Returns a hub whose own topics' events also go to `sink`.
    pub fn with_sink(sink: EventSink) -> Self {
        Self { topics: Mutex::default(), sink: Some(sink) }
    }

    /// Opens the topic of attempt `attempt` of `id`, whose durable record is at `last_seq`.
    pub fn open(&self, id: &str, attempt: u32, last_seq: u64) -> Arc<Topic> {
        let topic = Arc::new(Topic::new(id, attempt, last_seq, false, self.sink.clone()));
        self.topics.lock().expect("hub lock").insert(id.to_string(), topic.clone());
        topic
    }

    /// Returns the topic of `id`, opening one at the record's point if there is none.
    pub fn get_or_open(&self, id: &str, attempt: u32, last_seq: u64) -> Arc<Topic> {
        let mut topics = self.topics.lock().expect("hub lock");
        topics
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(Topic::new(id, attempt, last_seq, false, self.sink.clone()))
            })
            .clone()
    }

    /// Returns the topic of attempt `attempt` of `id`, creating an empty one to relay into
    /// if there is none.
    pub fn open_relay(&self, id: &str, attempt: u32, last_seq: u64) -> RelayTopic {
        let mut topics = self.topics.lock().expect("hub lock");
        match topics.get(id) {
            Some(topic) if topic.attempt == attempt => RelayTopic::Existing(topic.clone()),
            _ => {
                let topic = Arc::new(Topic::new(id, attempt, last_seq, true, None));
                topics.insert(id.to_string(), topic.clone());
                RelayTopic::New(topic)
            }
        }
    }

    /// Forgets `topic` of `id` now, if it is still the current one.
    pub fn remove(&self, id: &str, topic: &Arc<Topic>) {
        let mut topics = self.topics.lock().expect("hub lock");
        if topics.get(id).is_some_and(|current| Arc::ptr_eq(current, topic)) {
            topics.remove(id);
        }
    }

    /// Returns the topic of `id`, if this node runs it (or ran it recently).
    pub fn get(&self, id: &str) -> Option<Arc<Topic>> {
        self.topics.lock().expect("hub lock").get(id).cloned()
    }

    /// Returns every topic with its id.
    pub fn topics(&self) -> Vec<(String, Arc<Topic>)> {
        let topics = self.topics.lock().expect("hub lock");
        topics.iter().map(|(id, topic)| (id.clone(), topic.clone())).collect()
    }

    /// Returns how many topics the hub holds.
    pub fn len(&self) -> usize {
        self.topics.lock().expect("hub lock").len()
    }

    /// Returns whether the hub holds no topic.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets the topic of `id` after `linger`, so late reconnects can still resume from
    /// memory; later ones are served from the replicated record.
    pub fn retire(self: &Arc<Self>, id: &str, topic: &Arc<Topic>, linger: Duration) {
        let hub = self.clone();
        let id = id.to_string();
        let topic = topic.clone();
        tokio::spawn(async move {
            tokio::time::sleep(linger).await;
            let mut topics = hub.topics.lock().expect("hub lock");
            // A later attempt may have opened its own topic meanwhile: leave that one.
            if topics.get(&id).is_some_and(|current| Arc::ptr_eq(current, &topic)) {
                topics.remove(&id);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn subscribers_see_every_event_after_their_resume_point_once() {
        let topic = Topic::new("s", 1, 0, false, None);
        for page in 1..=3 {
            topic.publish(EventKind::Progress, json!({ "page": page })).await;
        }
        let fresh = topic.subscribe(None, || "state").await;
        assert_eq!((fresh.seq, fresh.replay.len()), (3, 0));
        let mut resumed = topic.subscribe(Some(1), || ()).await;
        assert_eq!(resumed.replay.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);

        let failed: Result<Option<u64>, &str> =
            topic.publish_durable(EventKind::PartCompleted, |_| async { Err("no quorum") }).await;
        assert!(failed.is_err());
        let seq = topic.publish_durable(EventKind::Completed, |seq| async move {
            assert_eq!(seq, 4, "a failed durable publish does not use its number");
            Ok::<_, ()>(json!({}))
        });
        assert_eq!(seq.await, Ok(Some(4)));
        let live = resumed.live.recv().await.unwrap();
        assert_eq!(
            (live.seq, live.kind, live.is_terminal(), live.id()),
            (4, EventKind::Completed, true, "1:4".to_string())
        );
        assert_eq!(topic.since(2).await.len(), 2);
        assert!(resumed.resumed && !fresh.resumed);

        // Nothing follows the terminal event.
        assert_eq!(topic.publish(EventKind::Progress, json!({})).await, None);
        let after_end: Result<Option<u64>, ()> =
            topic.publish_durable(EventKind::Failed, |_| async { panic!("not called") }).await;
        assert_eq!(after_end, Ok(None));
        // A resume point the topic never had starts over with a snapshot.
        let opened_later = Topic::new("s", 1, 10, false, None);
        assert!(!opened_later.subscribe(Some(3), || ()).await.resumed);
        assert!(opened_later.subscribe(Some(10), || ()).await.resumed);
    }

    #[tokio::test]
    async fn history_is_bounded_by_bytes_and_resumes_before_it_start_over() {
        let topic = Topic::new("t", 1, 0, false, None);
        assert!(topic.live.get().is_none(), "no channel until someone subscribes");
        let blob = json!({ "blob": "x".repeat(16 * 1024) });
        for _ in 0..3_000 {
            topic.publish(EventKind::Progress, blob.clone()).await;
        }
        let (kept, bytes) = topic.history_size().await;
        assert!(bytes <= MAX_HISTORY_BYTES && (60..70).contains(&kept), "{kept} events, {bytes} B");
        let oldest_kept = 3_000 - kept as u64 + 1;
        assert!(!topic.subscribe(Some(oldest_kept - 2), || ()).await.resumed, "snapshot");
        let resumed = topic.subscribe(Some(oldest_kept - 1), || ()).await;
        assert!(resumed.resumed && resumed.replay.len() == kept);
        assert_eq!(topic.num_subscribers(), 1, "the live channel, made by the first");
        // Small events are bounded by count.
        let small = Topic::new("s", 1, 0, false, None);
        for _ in 0..MAX_HISTORY + 5 {
            small.publish(EventKind::Progress, json!({})).await;
        }
        assert_eq!(small.history_size().await.0, MAX_HISTORY);
        // Closing before anyone watches, or after: every watcher sees it.
        let watched = topic.closed();
        assert!(!*watched.borrow());
        topic.close();
        assert!(*watched.borrow() && *topic.closed().borrow());
        let unwatched = Topic::new("u", 1, 0, false, None);
        unwatched.close();
        assert!(*unwatched.closed().borrow());
        // Memory, not JSON: an array of zeros holds 32 bytes an element.
        assert_eq!(footprint(&json!([0, 0, 0])), 4 * std::mem::size_of::<Value>());
    }
}

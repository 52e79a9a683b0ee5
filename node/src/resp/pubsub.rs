//! Pub/sub of the Redis protocol endpoint, delivered on every node.
//!
//! Each node keeps its own subscribers ([`LocalBus`]). `PUBLISH` on any node delivers to
//! this node's subscribers and hands the message to every other live node that serves
//! the protocol, over the signed internal API (`/internal/resp/publish`); the reply is
//! the number of subscribers that received it, cluster-wide, as Redis counts them.
//!
//! Order: one queue and one sender task per peer, so messages published on a node reach
//! each other node in the order they were published, batched (up to [`PEER_BATCH`] per
//! request). Delivery is at most once, as in Redis: a node that cannot be reached within
//! [`PEER_TIMEOUT`] misses the messages and counts nothing. Pub/sub does not go through
//! Raft: it is not state, and Redis keeps none of it either.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use shoal_raft::{InternalClient, NodeId};
use tokio::sync::{mpsc, oneshot};

use super::glob;
use crate::gossip::Gossip;

/// The internal endpoint that delivers another node's messages here.
pub const PUBLISH_PATH: &str = "/internal/resp/publish";
/// Most messages in one request to a peer.
pub const PEER_BATCH: usize = 256;
/// The most message bytes in one request to a peer (one larger message goes alone).
const PEER_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// How long a peer has to take a batch.
const PEER_TIMEOUT: Duration = Duration::from_secs(1);
/// Messages a subscriber may fall behind by; a slower one is disconnected, like a Redis
/// client past its pub/sub output buffer limit.
pub const SUBSCRIBER_BUFFER: usize = 16_384;
/// Bytes of messages a subscriber may fall behind by (Redis's default pub/sub output
/// buffer limit is 32 MiB too).
pub const SUBSCRIBER_BUFFER_BYTES: usize = 32 * 1024 * 1024;

/// A message as a subscriber gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The pattern it matched (`pmessage`), or `None` for a channel subscription.
    pub pattern: Option<Bytes>,
    pub channel: Bytes,
    pub payload: Bytes,
}

impl Delivery {
    /// The bytes the message holds.
    fn size(&self) -> usize {
        self.channel.len() + self.payload.len() + self.pattern.as_ref().map_or(0, Bytes::len)
    }
}

/// One connection's end of the bus.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub id: u64,
    sender: mpsc::Sender<Delivery>,
    /// Set when a message found the subscriber's buffer full: the connection closes.
    overflowed: Arc<AtomicBool>,
    /// Bytes of messages waiting for the connection to write them.
    queued_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

impl Subscriber {
    /// Returns a subscriber for connection `id` and the receiving end of its messages.
    pub fn new(id: u64) -> (Self, mpsc::Receiver<Delivery>) {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        let subscriber =
            Self { id, sender, overflowed: Arc::default(), queued_bytes: Arc::default() };
        (subscriber, receiver)
    }

    /// Returns whether a message was lost because the subscriber fell behind.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Notes that the connection took `delivery` off its queue.
    pub fn taken(&self, delivery: &Delivery) {
        self.queued_bytes.fetch_sub(delivery.size(), Ordering::Relaxed);
    }

    fn offer(&self, delivery: Delivery) -> bool {
        let size = delivery.size();
        let queued = self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        if queued + size > SUBSCRIBER_BUFFER_BYTES && queued > 0 {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            self.overflowed.store(true, Ordering::Relaxed);
            return false;
        }
        match self.sender.try_send(delivery) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                self.overflowed.store(true, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                false
            }
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    channels: HashMap<Bytes, HashMap<u64, Subscriber>>,
    patterns: HashMap<Bytes, HashMap<u64, Subscriber>>,
}

/// This node's subscribers.
#[derive(Debug, Default)]
pub struct LocalBus {
    registry: Mutex<Registry>,
}

impl LocalBus {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Subscribes `subscriber` to `channel` (`pattern`: a glob, `PSUBSCRIBE`).
    pub fn subscribe(&self, subscriber: &Subscriber, channel: Bytes, pattern: bool) {
        let mut registry = self.registry();
        let table = if pattern { &mut registry.patterns } else { &mut registry.channels };
        table.entry(channel).or_default().insert(subscriber.id, subscriber.clone());
    }

    /// Unsubscribes connection `id` from `channel` (or pattern).
    pub fn unsubscribe(&self, id: u64, channel: &[u8], pattern: bool) {
        let mut registry = self.registry();
        let table = if pattern { &mut registry.patterns } else { &mut registry.channels };
        if let Some(subscribers) = table.get_mut(channel) {
            subscribers.remove(&id);
            if subscribers.is_empty() {
                table.remove(channel);
            }
        }
    }

    /// Delivers a message to this node's subscribers; returns how many received it (a
    /// connection subscribed to the channel and to a matching pattern counts twice, as
    /// in Redis).
    pub fn deliver(&self, channel: &Bytes, payload: &Bytes) -> u64 {
        let registry = self.registry();
        let mut received = 0;
        if let Some(subscribers) = registry.channels.get(channel) {
            for subscriber in subscribers.values() {
                let delivery =
                    Delivery { pattern: None, channel: channel.clone(), payload: payload.clone() };
                received += u64::from(subscriber.offer(delivery));
            }
        }
        for (pattern, subscribers) in &registry.patterns {
            if !glob::matches(pattern, channel) {
                continue;
            }
            for subscriber in subscribers.values() {
                let delivery = Delivery {
                    pattern: Some(pattern.clone()),
                    channel: channel.clone(),
                    payload: payload.clone(),
                };
                received += u64::from(subscriber.offer(delivery));
            }
        }
        received
    }

    /// Returns the channels with a subscriber here, matching `pattern` if given.
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let registry = self.registry();
        registry
            .channels
            .keys()
            .filter(|channel| pattern.is_none_or(|pattern| glob::matches(pattern, channel)))
            .cloned()
            .collect()
    }

    /// Returns how many connections here subscribe to `channel`.
    pub fn num_subscribers(&self, channel: &[u8]) -> usize {
        self.registry().channels.get(channel).map_or(0, HashMap::len)
    }

    /// Returns how many patterns have a subscriber here.
    pub fn num_patterns(&self) -> usize {
        self.registry().patterns.len()
    }

    /// Returns whether anyone here subscribes to anything.
    pub fn is_empty(&self) -> bool {
        let registry = self.registry();
        registry.channels.is_empty() && registry.patterns.is_empty()
    }
}

/// One message on its way to a peer, and where its count goes.
struct Outgoing {
    addr: String,
    channel: Bytes,
    payload: Bytes,
    received: oneshot::Sender<u64>,
}

/// Pub/sub across the cluster: this node's bus and a queue to every peer.
#[derive(Debug)]
pub struct PubSub {
    pub local: Arc<LocalBus>,
    node_id: NodeId,
    client: InternalClient,
    gossip: Arc<Gossip>,
    peers: Mutex<HashMap<NodeId, mpsc::UnboundedSender<Outgoing>>>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl PubSub {
    /// Returns the pub/sub of node `node_id`, whose subscribers are on `local`.
    pub fn new(
        local: Arc<LocalBus>,
        node_id: NodeId,
        client: InternalClient,
        gossip: Arc<Gossip>,
    ) -> Self {
        Self { local, node_id, client, gossip, peers: Mutex::default() }
    }

    /// Publishes `payload` on `channel` to every node's subscribers; returns how many
    /// received it.
    pub async fn publish(&self, channel: Bytes, payload: Bytes) -> u64 {
        let mut received = self.local.deliver(&channel, &payload);
        let mut counts = Vec::new();
        for (node_id, addr) in self.peers().await {
            let (sender, count) = oneshot::channel();
            let outgoing = Outgoing {
                addr,
                channel: channel.clone(),
                payload: payload.clone(),
                received: sender,
            };
            if self.queue(node_id).send(outgoing).is_ok() {
                counts.push(count);
            }
        }
        for count in counts {
            received += count.await.unwrap_or(0);
        }
        received
    }

    /// Returns the live nodes other than this one that serve the protocol, with their
    /// API addresses.
    async fn peers(&self) -> Vec<(NodeId, String)> {
        self.gossip
            .members()
            .await
            .into_iter()
            .filter(|member| member.alive && member.node_id != self.node_id && member.resp)
            .filter_map(|member| Some((member.node_id, member.api_addr?)))
            .collect()
    }

    fn queue(&self, node_id: NodeId) -> mpsc::UnboundedSender<Outgoing> {
        let mut peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        peers
            .entry(node_id)
            .or_insert_with(|| {
                let (sender, queue) = mpsc::unbounded_channel();
                tokio::spawn(send_to_peer(self.client.clone(), node_id, queue));
                sender
            })
            .clone()
    }
}

/// Sends what is queued for peer `node_id`, a batch at a time, in order.
async fn send_to_peer(
    client: InternalClient,
    node_id: NodeId,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut batch = Vec::with_capacity(PEER_BATCH);
    while queue.recv_many(&mut batch, PEER_BATCH).await > 0 {
        let mut rest = &mut batch[..];
        while !rest.is_empty() {
            let (request, later) = rest.split_at_mut(request_len(rest));
            send_batch(&client, node_id, request).await;
            rest = later;
        }
        batch.clear();
    }
}

/// Returns how many of `queued` go in one request: at least one, and no more than
/// [`PEER_BATCH_BYTES`] of messages.
fn request_len(queued: &[Outgoing]) -> usize {
    let mut bytes = 0;
    queued
        .iter()
        .take_while(|outgoing| {
            bytes += outgoing.channel.len() + outgoing.payload.len();
            bytes <= PEER_BATCH_BYTES
        })
        .count()
        .max(1)
}

/// Posts `batch` to the peer (at the first message's address: a peer that moved gets
/// the next batch) and hands each message its count.
async fn send_batch(client: &InternalClient, node_id: NodeId, batch: &mut [Outgoing]) {
    let addr = batch[0].addr.clone();
    let messages: Vec<(&[u8], &[u8])> =
        batch.iter().map(|out| (&out.channel[..], &out.payload[..])).collect();
    let body = shoal_storage::codec::encode(&messages);
    let answer = client.post(&addr, node_id, PUBLISH_PATH, body, PEER_TIMEOUT).await;
    let counts: Vec<u64> = match answer {
        Ok(bytes) => shoal_storage::codec::decode(&bytes, "publish answer").unwrap_or_default(),
        Err(error) => {
            tracing::debug!(%error, node_id, "a peer missed published messages");
            Vec::new()
        }
    };
    for (index, outgoing) in batch.iter_mut().enumerate() {
        let (done, _) = oneshot::channel();
        let received = std::mem::replace(&mut outgoing.received, done);
        let _ = received.send(counts.get(index).copied().unwrap_or(0));
    }
}

/// Delivers messages published on another node to this node's subscribers; returns how
/// many received each (the internal endpoint's answer).
pub fn deliver_from_peer(local: &LocalBus, messages: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<u64> {
    messages
        .into_iter()
        .map(|(channel, payload)| local.deliver(&Bytes::from(channel), &Bytes::from(payload)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channel_and_pattern_subscribers_each_count() {
        let bus = LocalBus::default();
        let (one, mut one_rx) = Subscriber::new(1);
        let (two, mut two_rx) = Subscriber::new(2);
        bus.subscribe(&one, Bytes::from_static(b"news"), false);
        bus.subscribe(&one, Bytes::from_static(b"n*"), true);
        bus.subscribe(&two, Bytes::from_static(b"other"), false);
        assert_eq!(bus.deliver(&Bytes::from_static(b"news"), &Bytes::from_static(b"hi")), 2);
        assert_eq!(one_rx.recv().await.expect("message").pattern, None);
        assert_eq!(one_rx.recv().await.expect("pmessage").pattern, Some(Bytes::from_static(b"n*")));
        assert!(two_rx.try_recv().is_err());
        bus.unsubscribe(1, b"news", false);
        bus.unsubscribe(1, b"n*", true);
        assert_eq!(bus.deliver(&Bytes::from_static(b"news"), &Bytes::from_static(b"hi")), 0);
        assert_eq!(bus.channels(None), vec![Bytes::from_static(b"other")]);
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_marked() {
        let bus = LocalBus::default();
        let (slow, _receiver) = Subscriber::new(1);
        bus.subscribe(&slow, Bytes::from_static(b"c"), false);
        for _ in 0..SUBSCRIBER_BUFFER {
            bus.deliver(&Bytes::from_static(b"c"), &Bytes::from_static(b"x"));
        }
        assert!(!slow.overflowed());
        assert_eq!(bus.deliver(&Bytes::from_static(b"c"), &Bytes::from_static(b"x")), 0);
        assert!(slow.overflowed());
    }

    #[test]
    fn a_subscriber_behind_by_too_many_bytes_is_marked() {
        let bus = LocalBus::default();
        let (slow, mut receiver) = Subscriber::new(1);
        bus.subscribe(&slow, Bytes::from_static(b"c"), false);
        let big = Bytes::from(vec![b'x'; SUBSCRIBER_BUFFER_BYTES / 2]);
        assert_eq!(bus.deliver(&Bytes::from_static(b"c"), &big), 1);
        // Taken off the queue, it no longer counts.
        slow.taken(&receiver.try_recv().expect("a message"));
        assert_eq!(bus.deliver(&Bytes::from_static(b"c"), &big), 1);
        assert_eq!(bus.deliver(&Bytes::from_static(b"c"), &big), 0);
        assert!(slow.overflowed());
    }
}

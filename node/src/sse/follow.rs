//! [`follow`]: the one loop that turns a subscription to a [`Topic`] into its events
//! after a point, in order, each once: catching up from the topic's history when the
//! subscriber fell behind the live buffer, ending after the terminal event or when the
//! topic closes. The SSE handler and the owner's relay stream are adapters over it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, Stream};
use tokio::sync::broadcast::{self, error::RecvError};

use super::{ProgressEvent, Topic};

/// What a follower yields.
#[derive(Debug, Clone)]
pub enum Followed {
    /// The next event.
    Event(Arc<ProgressEvent>),
    /// Nothing happened for a heartbeat interval.
    Idle,
}

/// Follows `topic` from a [`super::Subscription`]'s `replay` and `live` receiver, taken when
/// its last event was `seq`: the replay first, then the live events after `seq`. With
/// `heartbeat`, yields [`Followed::Idle`] after each interval without an event.
pub fn follow(
    topic: Arc<Topic>,
    seq: u64,
    replay: Vec<Arc<ProgressEvent>>,
    live: broadcast::Receiver<Arc<ProgressEvent>>,
    heartbeat: Option<Duration>,
) -> impl Stream<Item = Followed> + Send {
    // The replay runs up to event `seq`; live events start after it.
    let last_seen = replay.first().map_or(seq, |event| event.seq - 1);
    let follower = Follower {
        closed: topic.closed(),
        topic,
        receiver: live,
        last_seen,
        done: false,
        backlog: replay.into(),
        heartbeat,
    };
    stream::unfold(follower, Follower::next)
}

struct Follower {
    closed: tokio::sync::watch::Receiver<bool>,
    topic: Arc<Topic>,
    receiver: broadcast::Receiver<Arc<ProgressEvent>>,
    /// The last event yielded (or the point the follower started after).
    last_seen: u64,
    /// The terminal event is out: nothing follows it.
    done: bool,
    backlog: VecDeque<Arc<ProgressEvent>>,
    heartbeat: Option<Duration>,
}

impl Follower {
    async fn next(mut self) -> Option<(Followed, Self)> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                if event.seq <= self.last_seen {
                    continue;
                }
                self.last_seen = event.seq;
                if event.is_terminal() {
                    self.done = true;
                    self.backlog.clear();
                }
                return Some((Followed::Event(event), self));
            }
            if self.done {
                return None;
            }
            let heartbeat = self.heartbeat;
            let idle = async move {
                match heartbeat {
                    Some(interval) => tokio::time::sleep(interval).await,
                    None => std::future::pending().await,
                }
            };
            let received = tokio::select! {
                biased;
                received = self.receiver.recv() => Some(received),
                // The topic's feed gave up without a terminal event: end, so that the
                // client reconnects with its Last-Event-ID and is served afresh.
                _ = self.closed.wait_for(|closed| *closed) => return None,
                _ = idle => None,
            };
            let Some(received) = received else { return Some((Followed::Idle, self)) };
            match received {
                Ok(event) => self.backlog.push_back(event),
                // Fell behind the live buffer: catch up from the topic's history.
                Err(RecvError::Lagged(_)) => {
                    self.backlog = self.topic.since(self.last_seen).await.into()
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

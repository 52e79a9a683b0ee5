//! Group commit: the leader packs the session and progress commands that wait for it into
//! one Raft entry (`Command::Batch`), so one log append, one fsync and one replication
//! round serve many clients.
//!
//! Commands in one batch touch distinct records, so applying each against the state
//! before the batch (as the state machine does, into one atomic write) is the same as
//! applying them one after another. A command for a record already in the batch waits
//! for the next one. While `MAX_IN_FLIGHT` batches are being committed, new commands
//! queue up and form the next batch: the busier the leader, the bigger the batches.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::network::{InternalClient, FORWARD_BATCH_PATH};
use crate::types::ProgressCommand;
use crate::types::{Command, Request, Response};
use crate::{unix_millis, ClusterError, Raft, Result};

/// The most commands in one entry.
const MAX_BATCH: usize = 256;
/// The most payload bytes (as [`command_bytes`] counts them) in one batch: an entry
/// stays small enough that an append of many is still a reasonable request.
const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Batches being committed at once. Two keep the queue filling while one commits, which
/// is what forms big batches; more make more, smaller entries (slower for 64 HTTP
/// clients: 0.86–0.89× sessions-write with 4, in side-by-side runs).
const MAX_IN_FLIGHT: usize = 2;
/// More batches that may be out at once while a backlog of at least [`BACKLOG`]
/// commands waits (pipelining Redis clients: 50 of them with `-P 16` keep 800 writes
/// queued), when two slots hold the queue back rather than letting batches fill.
const EXTRA_IN_FLIGHT: usize = 2;
const BACKLOG: usize = MAX_BATCH;

/// A command waiting for its batch.
pub(crate) struct Pending {
    pub command: Command,
    pub reply: oneshot::Sender<Result<Response>>,
}

/// Returns the record `command` changes, if it may share an entry with others.
pub(crate) fn batch_key(command: &Command) -> Option<(u8, &[u8])> {
    match command {
        Command::CreateSession { id, .. }
        | Command::UpdateSession { id, .. }
        | Command::DeleteSession { id, .. } => Some((0, id.as_bytes())),
        Command::Kv(command) => command.single_key().map(|key| (2, key)),
        Command::Once { command, .. } => batch_key(command),
        Command::Progress(
            ProgressCommand::Create { id, .. }
            | ProgressCommand::Update { id, .. }
            | ProgressCommand::Takeover { id, .. },
        ) => Some((1, id.as_bytes())),
        _ => None,
    }
}

/// Returns about how many bytes `command` carries (its data and values).
pub(crate) fn command_bytes(command: &Command) -> usize {
    match command {
        Command::CreateSession { id, data, .. } => id.len() + data.len(),
        Command::UpdateSession { id, change, .. } => {
            id.len()
                + match change {
                    crate::types::SessionChange::Replace(data)
                    | crate::types::SessionChange::MergePatch(data) => data.len(),
                }
        }
        Command::Once { command, .. } => command_bytes(command),
        Command::Kv(command) => command.payload_bytes(),
        Command::Batch(commands) => commands.iter().map(command_bytes).sum(),
        _ => 64,
    }
}

/// Proposes `command` alone, mapping openraft's answer.
pub(crate) async fn propose(raft: &Raft, command: Command, timeout: Duration) -> Result<Response> {
    let request = Request { now_ms: unix_millis(), command };
    let outcome = tokio::time::timeout(timeout, raft.client_write(request))
        .await
        .map_err(|_| ClusterError::Timeout(timeout))?;
    match outcome {
        Ok(written) => Ok(written.data),
        Err(openraft::error::RaftError::APIError(
            openraft::error::ClientWriteError::ForwardToLeader(forward),
        )) => Err(crate::error::not_leader(forward)),
        Err(openraft::error::RaftError::APIError(
            openraft::error::ClientWriteError::ChangeMembershipError(error),
        )) => Err(ClusterError::Raft(error.to_string())),
        Err(openraft::error::RaftError::Fatal(fatal)) => Err(ClusterError::Raft(fatal.to_string())),
    }
}

/// Takes batches off a queue: at most `MAX_IN_FLIGHT` out at once, each of what is queued
/// when a slot frees up (waiting for a slot lets the queue fill: that is what forms big
/// batches), up to `MAX_BATCH` and until an item that may not join.
struct Gatherer<T> {
    permits: Arc<Semaphore>,
    /// Slots beyond `permits` for a backlog.
    extra: Arc<Semaphore>,
    /// The item that did not join the last batch: it starts the next one.
    carried: Option<T>,
}

impl<T> Gatherer<T> {
    fn new() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            extra: Arc::new(Semaphore::new(EXTRA_IN_FLIGHT)),
            carried: None,
        }
    }

    /// Returns the next batch and its slot, or `None` once the queue is closed; `joins`
    /// says of each item, the first included, whether it may go in this batch.
    async fn next(
        &mut self,
        queue: &mut mpsc::UnboundedReceiver<T>,
        mut joins: impl FnMut(&T) -> bool,
    ) -> Option<(Vec<T>, OwnedSemaphorePermit)> {
        let first = match self.carried.take() {
            Some(item) => item,
            None => queue.recv().await?,
        };
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) if queue.len() >= BACKLOG => match self.extra.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => self.permits.clone().acquire_owned().await.ok()?,
            },
            Err(_) => self.permits.clone().acquire_owned().await.ok()?,
        };
        joins(&first);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(next) = queue.try_recv() else { break };
            if !joins(&next) {
                self.carried = Some(next);
                break;
            }
            batch.push(next);
        }
        Some((batch, permit))
    }
}

/// Forms batches from `queue` and proposes them until the queue closes.
pub(crate) async fn run(
    raft: Raft,
    timeout: Duration,
    mut queue: mpsc::UnboundedReceiver<Pending>,
) {
    let mut gatherer = Gatherer::new();
    loop {
        let mut keys: HashSet<(u8, Vec<u8>)> = HashSet::new();
        let mut bytes = 0;
        // Commands on a record already in the batch wait for the next one, and so do
        // those past the batch's size (the first always goes).
        let joins = |pending: &Pending| {
            let size = command_bytes(&pending.command);
            if bytes > 0 && bytes + size > MAX_BATCH_BYTES {
                return false;
            }
            let key = batch_key(&pending.command).map(|(kind, id)| (kind, id.to_vec()));
            let joins = key.is_none_or(|key| keys.insert(key));
            if joins {
                bytes += size.max(1);
            }
            joins
        };
        let Some((batch, permit)) = gatherer.next(&mut queue, joins).await else { return };
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            commit(&raft, batch, timeout).await;
        });
    }
}

/// Proposes `batch` as one entry and answers each command's caller.
async fn commit(raft: &Raft, mut batch: Vec<Pending>, timeout: Duration) {
    if batch.len() == 1 {
        let pending = batch.pop().expect("one command");
        let _ = pending.reply.send(propose(raft, pending.command, timeout).await);
        return;
    }
    let (commands, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|pending| (pending.command, pending.reply)).unzip();
    match propose(raft, Command::Batch(commands), timeout).await {
        Ok(Response::Batch(responses)) if responses.len() == replies.len() => {
            for (reply, response) in replies.into_iter().zip(responses) {
                let _ = reply.send(Ok(response));
            }
        }
        Ok(other) => {
            let error = ClusterError::Raft(format!("a batch was answered {other:?}"));
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// A command a follower hands to the leader at `addr`.
pub(crate) struct Forward {
    pub addr: String,
    pub leader_id: crate::NodeId,
    pub pending: Pending,
}

/// On a follower: sends the commands queued for the leader in batches, one signed
/// request each (`FORWARD_BATCH_PATH`), up to `MAX_IN_FLIGHT` at once; the leader's own
/// group commit then packs them into entries.
pub(crate) async fn run_forwards(
    client: InternalClient,
    timeout: Duration,
    mut queue: mpsc::UnboundedReceiver<Forward>,
) {
    let mut gatherer = Gatherer::new();
    loop {
        let (mut leader, mut bytes) = (None, 0);
        // One request goes to one leader: a command for another waits for the next one,
        // and so does one past the request's size (the first always goes).
        let joins = |forward: &Forward| {
            let size = command_bytes(&forward.pending.command);
            if bytes > 0 && bytes + size > MAX_BATCH_BYTES {
                return false;
            }
            bytes += size.max(1);
            leader.get_or_insert_with(|| forward.addr.clone()) == &forward.addr
        };
        let Some((batch, permit)) = gatherer.next(&mut queue, joins).await else { return };
        let (addr, leader_id) = (batch[0].addr.clone(), batch[0].leader_id);
        let batch: Vec<Pending> = batch.into_iter().map(|forward| forward.pending).collect();
        let client = client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (commands, replies): (Vec<Command>, Vec<_>) =
                batch.into_iter().map(|pending| (pending.command, pending.reply)).unzip();
            let answered: std::result::Result<Result<Vec<Result<Response>>>, _> =
                client.call(&addr, leader_id, FORWARD_BATCH_PATH, &commands, timeout).await;
            match answered {
                Ok(Ok(answers)) if answers.len() == replies.len() => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                }
                Ok(Ok(answers)) => {
                    let error = ClusterError::Raft(format!(
                        "the leader answered {} of {} forwarded commands",
                        answers.len(),
                        replies.len()
                    ));
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
                Ok(Err(error)) => {
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
                Err(error) => {
                    let error = ClusterError::Unreachable(error.to_string());
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_record_commands_are_batched() {
        let create = Command::CreateSession { id: "a".into(), data: "{}".into(), ttl_ms: 1 };
        assert_eq!(batch_key(&create), Some((0, &b"a"[..])));
        assert_eq!(batch_key(&Command::Expire), None);
        assert_eq!(batch_key(&Command::Touch { ids: vec!["a".into()] }), None);
    }
}

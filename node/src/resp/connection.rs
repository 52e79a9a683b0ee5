//! One Redis client connection: read what it sent, run it, write the replies in order.
//!
//! - **Authentication**: with `--resp-password`, nothing but `AUTH`, `HELLO … AUTH`,
//!   `QUIT` and `RESET` runs before the password is given, and it must be given within
//!   the request timeout.
//! - **Timeouts**: a command begun must arrive whole within the request timeout (a
//!   client that trickles bytes is cut off); an idle connection closes after the idle
//!   timeout, unless it subscribes.
//! - **Pipelines**: everything already received runs as one batch. Consecutive writes to
//!   distinct keys go to the cluster together (one group commit) and are answered in
//!   order; a read waits for the writes before it, and the reads of a batch share one
//!   read barrier, taken after they arrived: each read still sees every write
//!   acknowledged before it was sent.
//! - **Subscriber mode** (RESP2): only the subscribe commands, `PING`, `QUIT` and
//!   `RESET` run; messages are written as they come. In RESP3 they are push frames and
//!   every command runs.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::client::Connection;
use super::commands::{self, Op, Render};
use super::pubsub::{Delivery, Subscriber};
use super::reply::Reply;
use super::request::{Limits, Parser};
use super::{admin, Resp};
use crate::config::MAX_WRITE_BYTES;

/// The longest inline command (Redis's limit is 64 KiB too).
const MAX_INLINE_BYTES: usize = 64 * 1024;
/// The most bytes one command may take (a write carries at most `MAX_WRITE_BYTES`; a
/// read of many keys names them in less).
const MAX_QUERY_BYTES: usize = 2 * MAX_WRITE_BYTES;
/// The most bytes a connection that has not authenticated may send ahead of a command.
const MAX_AUTH_QUERY_BYTES: usize = 64 * 1024;
/// Commands run as one batch at most.
const MAX_BATCH: usize = 1024;
/// Serves one client until it leaves, breaks the protocol, times out or the node stops.
pub(super) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    resp: Arc<Resp>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = resp.config.clone();
    let local = stream.local_addr().unwrap_or(peer);
    let (mut reader, mut stream) = stream.into_split();
    if resp.clients.fetch_add(1, Ordering::Relaxed) >= config.max_clients {
        let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
        resp.clients.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let id = resp.next_client_id.fetch_add(1, Ordering::Relaxed);
    let (subscriber, mut deliveries) = Subscriber::new(id);
    let mut connection = Connection {
        resp: resp.clone(),
        id,
        peer,
        local,
        connected: Instant::now(),
        resp3: false,
        authenticated: config.password.is_none(),
        auth_failures: 0,
        name: None,
        lib_name: None,
        lib_version: None,
        subscriber,
        channels: HashSet::new(),
        patterns: HashSet::new(),
        closing: false,
    };
    let mut parser = Parser::new(Limits {
        max_bulk_bytes: config.max_bulk_bytes,
        max_args: config.max_args,
        max_inline_bytes: MAX_INLINE_BYTES,
    });
    let connected = Instant::now();
    let (mut input, mut output) = (BytesMut::with_capacity(16 * 1024), BytesMut::new());
    let mut partial_since: Option<Instant> = None;
    let mut last_activity = Instant::now();
    let outcome: Result<(), &'static str> = async {
        loop {
            let mut batch = Vec::new();
            while batch.len() < MAX_BATCH {
                match parser.next(&mut input) {
                    Ok(Some(args)) => batch.push(args),
                    Ok(None) => break,
                    Err(error) => {
                        Reply::error(format!("ERR {error}")).encode(&mut output, connection.resp3);
                        let _ = stream.write_all(&output).await;
                        return Err("protocol error");
                    }
                }
            }
            if !batch.is_empty() {
                partial_since = (!input.is_empty()).then(Instant::now);
            } else if !input.is_empty() && partial_since.is_none() {
                partial_since = Some(Instant::now());
            }
            if !batch.is_empty() {
                last_activity = Instant::now();
                run_batch(&mut connection, batch, &mut output, &mut stream).await?;
                stream.write_all(&output).await.map_err(|_| "write failed")?;
                output.clear();
                if connection.closing {
                    return Ok(());
                }
                continue;
            }
            if connection.subscriber.overflowed() {
                return Err("subscriber fell behind");
            }
            // One command's bytes, as far as they arrived: the parser bounds each
            // argument and their count, this their sum (and a stranger's to what AUTH
            // needs), as Redis's query buffer limit does.
            let limit =
                if connection.authenticated { MAX_QUERY_BYTES } else { MAX_AUTH_QUERY_BYTES };
            if input.len() > limit {
                let text = format!("ERR Protocol error: a command of more than {limit} bytes");
                Reply::error(text).encode(&mut output, connection.resp3);
                let _ = stream.write_all(&output).await;
                return Err("query buffer limit");
            }
            // Whichever comes first: more input, a message, a deadline, the node stopping.
            let deadline = if !connection.authenticated {
                config.request_timeout.map(|limit| connected + limit)
            } else if let Some(since) = partial_since {
                config.request_timeout.map(|limit| since + limit)
            } else if connection.subscribed() {
                None
            } else {
                config.idle_timeout.map(|limit| last_activity + limit)
            };
            let sleep = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = reader.read_buf(&mut input) => match read {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(_) => {}
                },
                delivery = deliveries.recv(), if connection.subscribed() => {
                    if let Some(delivery) = delivery {
                        write_deliveries(&connection, delivery, &mut deliveries, &mut output);
                        stream.write_all(&output).await.map_err(|_| "write failed")?;
                        output.clear();
                    }
                }
                _ = sleep => {
                    return Err(if partial_since.is_some() || !connection.authenticated {
                        "request timeout"
                    } else {
                        "idle timeout"
                    });
                }
                () = stopped(&mut shutdown) => return Ok(()),
            }
        }
    }
    .await;
    if let Err(reason) = outcome {
        tracing::debug!(client = id, %peer, reason, "closed a Redis connection");
    }
    admin::forget_subscriptions(&connection);
    resp.clients.fetch_sub(1, Ordering::Relaxed);
}

/// Completes when the node stops (the guard `wait_for` returns is not `Send`: it is
/// dropped here, before the caller goes on).
pub(super) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Writes `first` and whatever else is waiting, up to a bound.
fn write_deliveries(
    connection: &Connection,
    first: Delivery,
    deliveries: &mut mpsc::Receiver<Delivery>,
    output: &mut BytesMut,
) {
    let mut next = Some(first);
    let mut written = 0;
    while let Some(delivery) = next {
        connection.subscriber.taken(&delivery);
        admin::message_reply(delivery).encode(output, connection.resp3);
        written += 1;
        next = if written < MAX_BATCH { deliveries.try_recv().ok() } else { None };
    }
}

/// Runs the commands of one batch, writing their replies in order into `output`; what
/// is ready goes out on `stream` before the batch waits on the cluster, so a long
/// pipeline's first replies do not wait for its last.
async fn run_batch(
    connection: &mut Connection,
    batch: Vec<Vec<Bytes>>,
    output: &mut BytesMut,
    stream: &mut OwnedWriteHalf,
) -> Result<(), &'static str> {
    let resp = connection.resp.clone();
    let mut pending = Pending::default();
    // Whether a read barrier taken after this batch arrived, and no write since, covers
    // the next read.
    let mut fresh = false;
    for args in batch {
        resp.commands.fetch_add(1, Ordering::Relaxed);
        let name = String::from_utf8_lossy(&args[0]).to_uppercase();
        let rest = &args[1..];
        if let Some(reply) = admin::gate(connection, &name, rest) {
            pending.reply(reply);
            continue;
        }
        if admin::is_admin(&name) {
            // Replies before it go out in the protocol they were asked in (`HELLO 3`
            // changes it).
            pending.settle(&resp, connection.resp3, output, stream).await?;
            let reply = admin::run(connection, &name, rest).await;
            pending.reply(reply.unwrap_or_else(|| admin::unknown_command(&args)));
            if connection.closing {
                break;
            }
            continue;
        }
        match commands::parse(&name, rest) {
            None => pending.reply(admin::unknown_command(&args)),
            Some(Op::Reply(reply)) => pending.reply(reply),
            Some(Op::Write(command, _)) if command.payload_bytes() > MAX_WRITE_BYTES => {
                pending.reply(Reply::error(format!(
                    "ERR this write carries more than {MAX_WRITE_BYTES} bytes of keys and values; \
                     split it (every write is one replicated entry)"
                )));
            }
            Some(Op::Write(command, render)) => {
                fresh = false;
                let key = command.single_key().map(<[u8]>::to_vec);
                let batchable = key.as_ref().is_some_and(|key| {
                    !resp.keyspace.classic.is_classic(key) && !pending.writes_key(key)
                });
                if let (true, Some(key)) = (batchable, key) {
                    pending.write(KvWrite::Command { command, render }, key);
                    continue;
                }
                pending.settle(&resp, connection.resp3, output, stream).await?;
                pending.reply(match command {
                    shoal_raft::KvCommand::Delete { keys } => resp.keyspace.delete(keys).await,
                    command => resp.keyspace.write(command, render).await,
                });
            }
            Some(Op::Read(read)) => {
                if pending.has_writes() {
                    fresh = false;
                }
                if !fresh {
                    pending.settle(&resp, connection.resp3, output, stream).await?;
                    if let Err(reply) = resp.keyspace.barrier().await {
                        pending.reply(reply);
                        continue;
                    }
                    fresh = true;
                }
                pending.reply(resp.keyspace.read(&read));
            }
        }
    }
    pending.finish(&resp, connection.resp3, output).await;
    Ok(())
}

/// The replies of a batch not yet written, and the writes that wait to be sent together.
#[derive(Default)]
struct Pending {
    replies: Vec<Reply>,
    writes: Vec<(KvWrite, Vec<u8>)>,
}

impl Pending {
    fn reply(&mut self, reply: Reply) {
        if self.writes.is_empty() {
            self.replies.push(reply);
        } else {
            // It answers a command after the waiting writes: keep the order.
            self.writes.push((KvWrite::Done(reply), Vec::new()));
        }
    }

    fn write(&mut self, write: KvWrite, key: Vec<u8>) {
        self.writes.push((write, key));
    }

    fn writes_key(&self, key: &[u8]) -> bool {
        self.writes.iter().any(|(_, other)| other == key)
    }

    fn has_writes(&self) -> bool {
        self.writes.iter().any(|(write, _)| !matches!(write, KvWrite::Done(_)))
    }

    /// Sends the waiting writes, then every reply so far, before the batch waits.
    async fn settle(
        &mut self,
        resp: &Resp,
        resp3: bool,
        output: &mut BytesMut,
        stream: &mut OwnedWriteHalf,
    ) -> Result<(), &'static str> {
        self.finish(resp, resp3, output).await;
        if !output.is_empty() {
            stream.write_all(output).await.map_err(|_| "write failed")?;
            output.clear();
        }
        Ok(())
    }

    /// Sends the waiting writes to the cluster together and encodes every reply in order.
    async fn finish(&mut self, resp: &Resp, resp3: bool, output: &mut BytesMut) {
        let writes = self.writes.drain(..).map(|(write, _)| async move {
            match write {
                KvWrite::Command { command, render } => resp.keyspace.write(command, render).await,
                KvWrite::Done(reply) => reply,
            }
        });
        let answered = join_all(writes).await;
        for reply in self.replies.drain(..).chain(answered) {
            reply.encode(output, resp3);
        }
    }
}

/// A write waiting in a batch, or the reply of a command after it.
enum KvWrite {
    Command { command: shoal_raft::KvCommand, render: Render },
    Done(Reply),
}

//! A rolling upgrade of a 3-node cluster of real `shoal` processes, from the build of an
//! earlier commit (`scripts/old-build`, or `SHOAL_OLD_BIN`) to the working tree's, one
//! node at a time (SIGTERM, the same data dir and port, the new binary, ready and caught
//! up, next), while a writer creates and updates sessions through every node (a second
//! one skips the node being upgraded, as a load balancer would) and an SSE client follows
//! a search through the nodes, reconnecting with `Last-Event-ID`.
//!
//! The order is a follower, then the leader, then the last follower, which owns the
//! search: first the old leader replicates to a new-build follower; then, with the
//! leader stopped, the two others elect one, and if the old-build node won, it is
//! paused (SIGSTOP) until a new-build node leads, so that a new-build leader replicates
//! to an old-build follower, forwards and read indexes cross versions both ways, and the
//! search's events are relayed from an old-build owner to new-build nodes. Stopping the
//! owner last restarts the search as attempt 2 on the new build.
//!
//! At the end every acknowledged write reads back, linearizably, on every node with its
//! last acknowledged content, and the stream kept the resume contract of
//! `node/src/api/progress.rs` (`check_stream`): ids strictly increasing and contiguous
//! within an attempt, a resume continuing right after its `Last-Event-ID` (or starting
//! over with a snapshot, never behind it), a new attempt opening with a snapshot, one
//! terminal event, and every snapshot labelled with the attempt whose state it shows.
//!
//! The stream followed is a search's, not a tracker's: a tracker whose owner restarts
//! within the takeover grace keeps its attempt and numbers its events again from its last
//! milestone, so its ids repeat (in the old build as in the new; see docs/upgrades.md).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shoal_tests::{get_json, get_served, shoal_binary, wait_until, TestCluster};

/// The build before the current work: the cluster starts on it.
const OLD_COMMIT: &str = "acbbcfd";

const FORM: Duration = Duration::from_secs(60);
/// How long a node may take to exit after SIGTERM.
const STOP: Duration = Duration::from_secs(30);
const READY: Duration = Duration::from_secs(60);
const CATCH_UP: Duration = Duration::from_secs(30);
/// How long one write may go unacknowledged (retried on 503 and on a stopped node)
/// before the writer gives up and fails the test.
const WRITE_OUTAGE: Duration = Duration::from_secs(30);
/// How long a node may take to serve the probe write and read of a mixed phase.
const SERVE: Duration = Duration::from_secs(30);
/// How long the paused old-build leader stays paused at most, waiting for a new leader.
const NEW_LEADER: Duration = Duration::from_secs(20);
/// The writer and the SSE client stop themselves after this, whatever happens.
const RUN_LIMIT: Duration = Duration::from_secs(600);
/// How long the search may take to end after the last node is upgraded.
const SEARCH_END: Duration = Duration::from_secs(300);
/// A stream that sends nothing (not even a keep-alive comment, every second here) for
/// this long is treated as dropped.
const STREAM_SILENCE: Duration = Duration::from_secs(15);
/// A write's try taking longer than this is listed in the figures.
const SLOW_ATTEMPT: Duration = Duration::from_secs(1);
/// Sessions the writer creates before it only updates them.
const MAX_SESSIONS: usize = 300;

/// Pace of the sample source: two parts of about 25 pages each, so one attempt of the
/// search takes about 50 s, longer than upgrading the two nodes before its owner.
const NODE_ARGS: &[&str] = &[
    "--sample-page-delay-ms",
    "2000",
    "--sse-keep-alive-ms",
    "1000",
    "--request-timeout-ms",
    "3000",
];

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("a client builds")
}

/// Returns the old build: `SHOAL_OLD_BIN`, or `scripts/old-build OLD_COMMIT` (cached in
/// target/upgrade/ after the first build, which takes minutes).
fn old_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SHOAL_OLD_BIN") {
        return Ok(PathBuf::from(path));
    }
    let workspace =
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("tests/ has a parent")?;
    eprintln!(
        "building the old build with scripts/old-build {OLD_COMMIT} (minutes the first time)"
    );
    let output = std::process::Command::new("bash")
        .arg(workspace.join("scripts/old-build"))
        .arg(OLD_COMMIT)
        .current_dir(workspace)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run scripts/old-build")?;
    ensure!(output.status.success(), "scripts/old-build {OLD_COMMIT} failed: {}", output.status);
    let stdout = String::from_utf8(output.stdout)?;
    let path = stdout.lines().last().context("scripts/old-build printed no path")?;
    Ok(PathBuf::from(path.trim()))
}

/// Which nodes the SSE client may connect to (false while one is being upgraded).
type Live = Arc<Mutex<Vec<bool>>>;

/// What the writer saw: the last acknowledged content of every session it wrote, and when
/// each acknowledgement came.
#[derive(Debug, Default)]
struct WriterReport {
    expected: HashMap<String, Value>,
    num_acknowledged: u64,
    num_creates: u64,
    num_updates: u64,
    /// Attempts that were not acknowledged and were sent again (503, a stopped node, a
    /// timeout).
    num_retried: u64,
    acknowledged_at: Vec<Instant>,
    /// Tries that took longer than `SLOW_ATTEMPT`: the node, when, how long, the outcome.
    slow_attempts: Vec<(usize, Instant, Duration, String)>,
}

/// One write the writer keeps sending until it is acknowledged.
enum Write {
    Create(Value),
    Put(String, Value),
    Patch(String, Value),
}

/// Sends `write` to `base` once; `Ok(Ok(id))` when acknowledged (2xx), `Ok(Err(why))`
/// when it may be sent again (503, no connection, a timeout), an error for any other
/// answer.
async fn send_write(
    client: &reqwest::Client,
    base: &str,
    write: &Write,
) -> anyhow::Result<Result<String, String>> {
    let request = match write {
        Write::Create(data) => {
            client.post(format!("{base}/api/sessions")).json(&json!({ "data": data }))
        }
        Write::Put(id, data) => {
            client.put(format!("{base}/api/sessions/{id}")).json(&json!({ "data": data }))
        }
        Write::Patch(id, patch) => client.patch(format!("{base}/api/sessions/{id}")).json(patch),
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return Ok(Err(format!("{error:#}"))),
    };
    let status = response.status();
    let text = match response.text().await {
        Ok(text) => text,
        // The answer was cut off: whether it was acknowledged is unknown; sent again.
        Err(error) => return Ok(Err(format!("{status}, then {error:#}"))),
    };
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return Ok(Err(format!("503 {text}")));
    }
    ensure!(status.is_success(), "{base}: a write answered {status}: {text}");
    let body: Value = serde_json::from_str(&text)?;
    Ok(Ok(body["id"].as_str().context("an acknowledged write without id")?.to_string()))
}

/// Creates and updates sessions through every node in turn until `stop` (or
/// `RUN_LIMIT`); sends every write again (to the next node) until it is acknowledged.
/// A write sent again is the same create, the same replacement or the same merge patch,
/// so the content the last acknowledgement stands for is known even when an earlier,
/// unacknowledged try took effect. With `skip`, nodes marked not live there are passed
/// over, as a load balancer does with a node taken out before it is stopped.
fn spawn_writer(
    name: &'static str,
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
    skip: Option<Live>,
) -> tokio::task::JoinHandle<anyhow::Result<WriterReport>> {
    tokio::spawn(async move {
        let client = http();
        let mut report = WriterReport::default();
        let mut ids: Vec<String> = Vec::new();
        let started = Instant::now();
        let mut next_node = 0_usize;
        let mut n = 0_u64;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < RUN_LIMIT {
            n += 1;
            let via = next_node % urls.len();
            let write = if ids.len() < MAX_SESSIONS && (ids.len() < 10 || n.is_multiple_of(3)) {
                Write::Create(json!({ "writer": name, "n": n, "born": n, "via": via }))
            } else if n.is_multiple_of(2) {
                let id = ids[(n as usize * 7) % ids.len()].clone();
                Write::Put(id, json!({ "writer": name, "n": n, "via": via, "replaced": true }))
            } else {
                let id = ids[(n as usize * 7) % ids.len()].clone();
                Write::Patch(id, json!({ "n": n, "via": via }))
            };
            let first_sent = Instant::now();
            let id = loop {
                let node = next_node % urls.len();
                next_node += 1;
                if skip.as_ref().is_some_and(|live| !live.lock().unwrap()[node]) {
                    ensure!(first_sent.elapsed() < WRITE_OUTAGE, "no live node to write to");
                    tokio::task::yield_now().await;
                    continue;
                }
                let sent = Instant::now();
                let outcome = send_write(&client, &urls[node], &write).await?;
                if sent.elapsed() > SLOW_ATTEMPT {
                    let how = outcome.as_ref().map_or_else(Clone::clone, |_| "acknowledged".into());
                    report.slow_attempts.push((node, sent, sent.elapsed(), how));
                }
                if let Ok(id) = outcome {
                    break id;
                }
                report.num_retried += 1;
                ensure!(
                    first_sent.elapsed() < WRITE_OUTAGE,
                    "write {n} was not acknowledged within {WRITE_OUTAGE:?} of tries on every node"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            report.num_acknowledged += 1;
            report.acknowledged_at.push(Instant::now());
            match write {
                Write::Create(data) => {
                    report.num_creates += 1;
                    report.expected.insert(id.clone(), data);
                    ids.push(id);
                }
                Write::Put(_, data) => {
                    report.num_updates += 1;
                    report.expected.insert(id, data);
                }
                Write::Patch(_, patch) => {
                    report.num_updates += 1;
                    let data = report.expected.get_mut(&id).context("patched an unknown id")?;
                    merge_flat(data, &patch);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(report)
    })
}

/// Applies a merge patch of scalar members to `data` (all the writer sends).
fn merge_flat(data: &mut Value, patch: &Value) {
    let (Some(data), Some(patch)) = (data.as_object_mut(), patch.as_object()) else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            data.remove(key);
        } else {
            data.insert(key.clone(), value.clone());
        }
    }
}

/// One SSE event with the time it arrived.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    attempt: u32,
    seq: u64,
    event: String,
    data: String,
}

impl Received {
    fn is_terminal(&self) -> bool {
        ["completed", "failed", "cancelled"].contains(&self.event.as_str())
    }
}

/// One connection of the SSE client: where, what it sent as `Last-Event-ID`, what it got
/// and how it ended.
#[derive(Debug, Clone)]
struct Connection {
    node: usize,
    opened: Instant,
    last_event_id: Option<(u32, u64)>,
    status: Option<u16>,
    events: Vec<Received>,
    ended: String,
}

fn parse_id(id: &str) -> anyhow::Result<(u32, u64)> {
    let (attempt, seq) = id.split_once(':').with_context(|| format!("event id {id:?}"))?;
    Ok((attempt.parse()?, seq.parse()?))
}

/// Reads one SSE connection to `url` into `connection` until the stream ends, fails, or
/// is silent for `STREAM_SILENCE`; returns whether a terminal event arrived.
async fn read_connection(
    client: &reqwest::Client,
    url: &str,
    connection: &mut Connection,
) -> anyhow::Result<bool> {
    let mut request = client.get(url).header("accept", "text/event-stream");
    if let Some((attempt, seq)) = connection.last_event_id {
        request = request.header("last-event-id", format!("{attempt}:{seq}"));
    }
    let mut response = match tokio::time::timeout(STREAM_SILENCE, request.send()).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            connection.ended = format!("no connection: {error}");
            return Ok(false);
        }
        Err(_) => {
            connection.ended = "no answer".to_string();
            return Ok(false);
        }
    };
    connection.status = Some(response.status().as_u16());
    if response.status() != StatusCode::OK {
        connection.ended = format!("answered {}", response.status());
        return Ok(false);
    }
    let mut buffer = String::new();
    loop {
        let chunk = match tokio::time::timeout(STREAM_SILENCE, response.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => {
                connection.ended = "the stream ended".to_string();
                return Ok(false);
            }
            Ok(Err(error)) => {
                connection.ended = format!("the stream broke: {error}");
                return Ok(false);
            }
            Err(_) => {
                connection.ended = format!("silent for {STREAM_SILENCE:?}");
                return Ok(false);
            }
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, "message".to_string(), String::new());
            let mut is_comment_only = true;
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("id:") {
                    id = Some(value.trim().to_string());
                } else if let Some(value) = line.strip_prefix("event:") {
                    event = value.trim().to_string();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim_start());
                } else {
                    continue;
                }
                is_comment_only = false;
            }
            if is_comment_only {
                continue;
            }
            let id = id.with_context(|| format!("an event without id: {event} {data}"))?;
            let (attempt, seq) = parse_id(&id)?;
            let received = Received { at: Instant::now(), attempt, seq, event, data };
            let terminal = received.is_terminal();
            connection.events.push(received);
            if terminal {
                connection.ended = "terminal event".to_string();
                return Ok(true);
            }
        }
    }
}

/// Follows `path` from node `order[0]` until a terminal event (or `RUN_LIMIT`), and
/// whenever a connection ends without one, reconnects with the last event id to the next
/// live node in `order`.
fn spawn_follower(
    urls: Vec<String>,
    order: Vec<usize>,
    live: Live,
    path: String,
) -> tokio::task::JoinHandle<anyhow::Result<Vec<Connection>>> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("a client builds");
        let started = Instant::now();
        let mut connections: Vec<Connection> = Vec::new();
        let mut position = 0_usize;
        let mut last_event_id = None;
        while started.elapsed() < RUN_LIMIT {
            let node = order[position % order.len()];
            let mut connection = Connection {
                node,
                opened: Instant::now(),
                last_event_id,
                status: None,
                events: Vec::new(),
                ended: String::new(),
            };
            let url = format!("{}{path}", urls[node]);
            let terminal = read_connection(&client, &url, &mut connection).await?;
            if let Some(last) = connection.events.last() {
                last_event_id = Some((last.attempt, last.seq));
            }
            let num_events = connection.events.len();
            eprintln!(
                "sse: node {node} (Last-Event-ID {:?}): {num_events} events, {}",
                connection.last_event_id, connection.ended
            );
            let no_content = connection.status == Some(204);
            connections.push(connection);
            if terminal || no_content {
                return Ok(connections);
            }
            // The next live node in the upgrade order; the same one when none other is.
            for step in 1..=order.len() {
                let candidate = (position + step) % order.len();
                if live.lock().unwrap()[order[candidate]] {
                    position = candidate;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("no terminal event within {RUN_LIMIT:?}; connections: {connections:#?}")
    })
}

/// What the stream's check counts.
#[derive(Debug, Default)]
struct StreamFigures {
    num_events: usize,
    num_reconnects: usize,
    /// Reconnects that continued right after their `Last-Event-ID`.
    num_resumed_exactly: usize,
    /// Reconnects in the same attempt answered with a fresh snapshot instead.
    num_started_over: usize,
    /// Reconnects that found a later attempt (the search taken over).
    num_new_attempts: usize,
    last_attempt: u32,
}

/// Checks the stream against the resume contract of `node/src/api/progress.rs` and
/// returns its figures:
/// - every event has an id `<attempt>:<seq>`; the first is a snapshot, and a snapshot
///   shows the state of the attempt its id names;
/// - within an attempt each event follows the one before it (`seq + 1`), within a stream
///   and on a resume with `Last-Event-ID`: no gap, no duplicate; except that a resume the
///   node cannot replay starts over with a snapshot (not behind the resumed id), and a
///   node that follows the replicated record sends its snapshot, then the terminal event;
/// - attempts never go back, and a later attempt (a takeover) opens with a snapshot;
/// - exactly one terminal event, the last, `completed`; a 204 only after it.
///
/// (Before this build, a resume through a relaying node while the owner was down got a
/// snapshot behind the resumed id, labelled with the old attempt but showing the new
/// one's state: this check fails on that.)
fn check_stream(connections: &[Connection]) -> anyhow::Result<StreamFigures> {
    let mut figures = StreamFigures::default();
    let all: Vec<(usize, usize, &Received)> = connections
        .iter()
        .enumerate()
        .flat_map(|(number, c)| c.events.iter().enumerate().map(move |(i, e)| (number, i, e)))
        .collect();
    let (_, _, first) = all.first().context("the stream delivered nothing")?;
    ensure!(first.event == "snapshot", "the first event is {first:?}, not a snapshot");
    figures.num_reconnects = connections.len() - 1;
    for (number, connection) in connections.iter().enumerate() {
        let ended_before = all.iter().rev().find(|(n, _, _)| *n < number);
        if connection.status == Some(204) {
            ensure!(
                ended_before.is_some_and(|(_, _, event)| event.is_terminal()),
                "connection {number}: 204 (you saw the end) before the end"
            );
        }
    }
    for (position, (number, index, event)) in all.iter().enumerate() {
        let connection = &connections[*number];
        let context =
            || format!("connection {number} to node {}: {connection:#?}", connection.node);
        let id = format!("{}:{}", event.attempt, event.seq);
        figures.num_events += 1;
        let shown_attempt = if event.event == "snapshot" {
            let state: Value = serde_json::from_str(&event.data)?;
            state["attempt"].as_u64().context("a snapshot without attempt")?
        } else {
            u64::from(event.attempt)
        };
        let Some(position_before) = position.checked_sub(1) else {
            continue;
        };
        let (_, _, before) = all[position_before];
        let before_id = format!("{}:{}", before.attempt, before.seq);
        ensure!(!before.is_terminal(), "{id} came after the terminal {before_id}; {}", context());
        let at_resume = *index == 0;
        if event.attempt < before.attempt {
            bail!("attempt went back: {before_id}, then {id}; {}", context());
        }
        let mislabelled = shown_attempt != u64::from(event.attempt);
        let behind = event.attempt == before.attempt && event.seq < before.seq;
        if event.event == "snapshot" && (mislabelled || behind) {
            let what = if mislabelled {
                format!("snapshot {id} shows attempt {shown_attempt}")
            } else {
                format!("snapshot {id} is behind the resumed {before_id}")
            };
            bail!("{what}; {}", context());
        }
        if event.attempt > before.attempt {
            // A takeover restarts the search: its stream opens with a snapshot.
            ensure!(
                event.event == "snapshot",
                "attempt {} began with {id} {:?}; {}",
                event.attempt,
                event.event,
                context()
            );
            if at_resume {
                figures.num_new_attempts += 1;
            }
        } else if event.event == "snapshot" {
            // Only a resume the node cannot replay may start over with a snapshot.
            ensure!(at_resume, "snapshot {id} in the middle of a stream; {}", context());
            figures.num_started_over += 1;
        } else if before.event == "snapshot" && event.is_terminal() && !at_resume {
            // A node following the replicated record rather than live events sends its
            // snapshot, then the record's terminal event.
            ensure!(event.seq > before.seq, "terminal {id} behind the snapshot; {}", context());
        } else {
            let how = if at_resume { "on a resume" } else { "within one stream" };
            ensure!(
                event.seq == before.seq + 1,
                "{before_id}, then {id} {how}: a gap or a duplicate; {}",
                context()
            );
            if at_resume {
                figures.num_resumed_exactly += 1;
            }
        }
    }
    let (_, _, last) = all.last().context("no events")?;
    ensure!(last.event == "completed", "the stream ended with {last:?}, not completed");
    let terminals = all.iter().filter(|(_, _, event)| event.is_terminal()).count();
    ensure!(terminals == 1, "{terminals} terminal events");
    figures.last_attempt = last.attempt;
    Ok(figures)
}

/// Returns the leader's Raft id as node `index` sees it.
async fn leader_seen_by(cluster: &TestCluster, index: usize) -> anyhow::Result<Option<u64>> {
    Ok(get_json(&cluster.nodes[index].url("/api/health")).await?["cluster"]["leader_id"].as_u64())
}

/// Waits until node `index` has applied what the other nodes had applied when it came
/// back (their highest `last_applied`).
async fn wait_caught_up(cluster: &TestCluster, index: usize) -> anyhow::Result<u64> {
    let mut target = 0;
    for other in (0..cluster.nodes.len()).filter(|other| *other != index) {
        let health = get_json(&cluster.nodes[other].url("/api/health")).await?;
        target = target.max(health["cluster"]["last_applied"].as_u64().unwrap_or(0));
    }
    let url = cluster.nodes[index].url("/api/health");
    wait_until("the upgraded node has caught up", CATCH_UP, || {
        let url = url.clone();
        async move {
            let applied = get_json(&url).await?["cluster"]["last_applied"].as_u64();
            Ok(applied.is_some_and(|applied| applied >= target))
        }
    })
    .await
    .with_context(|| format!("target {target}; log:\n{}", cluster.nodes[index].log()))?;
    Ok(target)
}

/// Sends `write` through node `base` until acknowledged (503 and no connection are
/// retried, up to `SERVE`); returns the session id.
async fn write_served(base: &str, write: &Write) -> anyhow::Result<String> {
    let client = http();
    let started = Instant::now();
    loop {
        if let Ok(id) = send_write(&client, base, write).await? {
            return Ok(id);
        }
        ensure!(started.elapsed() < SERVE, "{base} did not serve a write within {SERVE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks that every node serves a write (a create and a replacement through each) and a
/// read (of every probe, on each); returns the probes' ids and content, acknowledged
/// writes the final check reads again.
async fn check_every_node_serves(
    cluster: &TestCluster,
    phase: &str,
) -> anyhow::Result<Vec<(String, Value)>> {
    let mut probes = Vec::new();
    for via in 0..cluster.nodes.len() {
        let base = cluster.nodes[via].url("");
        let created = json!({ "probe": phase, "via": via });
        let id = write_served(&base, &Write::Create(created)).await?;
        let replaced = json!({ "probe": phase, "via": via, "replaced": true });
        write_served(&base, &Write::Put(id.clone(), replaced.clone())).await?;
        probes.push((id, replaced));
    }
    for reader in 0..cluster.nodes.len() {
        for (id, data) in &probes {
            let session = get_served(&cluster.nodes[reader].url(&format!("/api/sessions/{id}")))
                .await
                .with_context(|| format!("phase {phase}: node {reader} reads {id}"))?;
            ensure!(&session["data"] == data, "phase {phase}: node {reader} read {session}");
        }
    }
    println!("{phase}: every node served a create, a replacement and {} reads", probes.len());
    Ok(probes)
}

/// Pauses node `old` (the old build, leading) with SIGSTOP until the others elect one of
/// them, then lets it go on: from then on a new-build node leads an old-build follower.
async fn move_leadership_off(
    cluster: &TestCluster,
    old: usize,
    ids: &[u64],
) -> anyhow::Result<Duration> {
    let others: Vec<usize> = (0..cluster.nodes.len()).filter(|index| *index != old).collect();
    let paused = Instant::now();
    cluster.nodes[old].signal("STOP")?;
    let elected = wait_until("a new-build node leads", NEW_LEADER, || async {
        for index in &others {
            match leader_seen_by(cluster, *index).await? {
                Some(leader) if leader != ids[old] => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    })
    .await;
    // Continued whatever happened, so that a failure leaves no frozen process behind.
    cluster.nodes[old].signal("CONT")?;
    elected?;
    Ok(paused.elapsed())
}

/// One node's upgrade: when it began (SIGTERM) and when it was back (ready, caught up).
#[derive(Debug)]
struct Restart {
    node: usize,
    stopped: Instant,
    /// When the old process had exited.
    exited: Instant,
    back: Instant,
}

/// Returns the longest time between acknowledgements from `restart.stopped` until a
/// second after `restart.back`.
fn longest_pause(acknowledged_at: &[Instant], restart: &Restart) -> Duration {
    let until = restart.back + Duration::from_secs(1);
    let mut times = vec![restart.stopped];
    times.extend(acknowledged_at.iter().copied().filter(|at| *at > restart.stopped && *at < until));
    times.push(until.min(*acknowledged_at.last().unwrap_or(&until)).max(restart.stopped));
    times
        .windows(2)
        .map(|pair| pair[1].saturating_duration_since(pair[0]))
        .max()
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs the old build from git history (scripts/old-build); run by scripts/test"]
async fn rolling_upgrade_keeps_every_acknowledged_write_and_the_stream() -> anyhow::Result<()> {
    let old = tokio::task::spawn_blocking(old_binary).await??;
    let new = tokio::task::spawn_blocking(|| shoal_binary().to_path_buf()).await?;
    println!("old build: {}\nnew build: {}", old.display(), new.display());
    ensure!(old.is_file() && new.is_file(), "missing binaries: {old:?} {new:?}");

    let dir = tempfile::tempdir()?;
    let mut cluster = TestCluster::start_with_binary(dir.path(), 3, NODE_ARGS, &old)?;
    println!("--- three nodes on the old build ({OLD_COMMIT})");
    let leader = cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let mut ids = Vec::new();
    for index in 0..3 {
        ids.push(cluster.node_id(index).await?);
    }
    let followers: Vec<usize> = (0..3).filter(|index| *index != leader).collect();
    let (first, owner) = (followers[0], followers[1]);
    let order = vec![first, leader, owner];
    println!("leader: node {leader}; upgrade order: {order:?} (node {owner} runs the search)");
    let mut acknowledged_probes = check_every_node_serves(&cluster, "all old").await?;

    println!("--- a search on node {owner}, followed over SSE from node {first}, and a writer");
    let urls: Vec<String> = cluster.nodes.iter().map(|node| node.url("")).collect();
    let body = json!({"ufs": ["SP", "RJ"], "date_from": "2025-01-01", "date_to": "2025-12-31"});
    let response = http().post(format!("{}/api/searches", urls[owner])).json(&body).send().await?;
    ensure!(response.status() == StatusCode::ACCEPTED, "search: {}", response.text().await?);
    let search_id = response.json::<Value>().await?["id"].as_str().context("id")?.to_string();
    let search_url = format!("{}/api/searches/{search_id}", urls[first]);
    let state = get_served(&search_url).await?;
    ensure!(state["owner"] == ids[owner], "the search runs on node {owner}: {state}");
    let live: Live = Arc::new(Mutex::new(vec![true; 3]));
    let path = format!("/api/searches/{search_id}/events");
    let follower = spawn_follower(urls.clone(), order.clone(), live.clone(), path);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer("every node", urls.clone(), stop.clone(), None);
    let balanced_writer =
        spawn_writer("live nodes", urls.clone(), stop.clone(), Some(live.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    let mut restarts: Vec<Restart> = Vec::new();
    let mut leadership_pause = None;
    for (step, node) in order.iter().copied().enumerate() {
        let role = if node == leader { "the leader" } else { "a follower" };
        println!("--- upgrade node {node} ({role}), {} of 3", step + 1);
        if node == owner {
            let state = get_served(&search_url).await?;
            ensure!(
                state["status"] == "running" && state["attempt"] == 1,
                "the search should still run its first attempt when its owner is upgraded \
                 (raise --sample-page-delay-ms): {state}"
            );
        }
        live.lock().unwrap()[node] = false;
        let stopped = Instant::now();
        let status = cluster.nodes[node].terminate(STOP).await?;
        ensure!(status.success(), "node {node} exited with {status} on SIGTERM");
        let exited = Instant::now();
        cluster.nodes[node].set_binary(&new);
        cluster.nodes[node].restart()?;
        cluster.nodes[node].wait_ready(READY).await?;
        ensure!(
            cluster.node_id(node).await? == ids[node],
            "node {node} came back as another member"
        );
        let applied = wait_caught_up(&cluster, node).await?;
        live.lock().unwrap()[node] = true;
        let back = Instant::now();
        println!(
            "node {node} is on the new build, ready and caught up (index {applied}) after {:?}",
            back - stopped
        );
        restarts.push(Restart { node, stopped, exited, back });
        let since = |at: Instant| at.saturating_duration_since(started);
        println!("(node {node}: SIGTERM at {:?}, back at {:?})", since(stopped), since(back));
        cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;

        if step == 1 {
            let current = leader_seen_by(&cluster, first).await?;
            if current == Some(ids[owner]) {
                println!(
                    "--- node {owner} (old build) leads: pause it until a new-build node leads"
                );
                leadership_pause = Some(move_leadership_off(&cluster, owner, &ids).await?);
                cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
            }
            let current = leader_seen_by(&cluster, owner).await?;
            ensure!(
                current.is_some_and(|leader| leader != ids[owner]),
                "a new-build node should lead the old one: {current:?}"
            );
        }
        let phase = match step {
            0 => format!("mixed: old leader, node {node} new"),
            1 => format!("mixed: new leader, node {owner} old"),
            _ => "all new".to_string(),
        };
        acknowledged_probes.extend(check_every_node_serves(&cluster, &phase).await?);
    }

    println!("--- the search ends on the new build; the writer stops");
    let connections = tokio::time::timeout(SEARCH_END, follower)
        .await
        .context("the SSE client did not reach the end")???;
    stop.store(true, Ordering::Relaxed);
    let reports = [writer.await??, balanced_writer.await??];

    println!("--- the stream kept the resume contract and resumed after every restart");
    let figures = check_stream(&connections)?;
    for restart in &restarts {
        // Events on a connection opened after the stop, and events after the node was back.
        let resumed = connections
            .iter()
            .any(|connection| connection.opened > restart.stopped && !connection.events.is_empty());
        let went_on = connections.iter().flat_map(|c| &c.events).any(|e| e.at > restart.back);
        ensure!(
            resumed && went_on,
            "the stream did not go on after node {} was upgraded: {connections:#?}",
            restart.node
        );
    }
    let dropped_by_restart = restarts.iter().all(|restart| {
        connections.iter().any(|connection| {
            connection.node == restart.node
                && connection.opened < restart.stopped
                && connection.ended != "terminal event"
        })
    });
    ensure!(dropped_by_restart, "every restart should cut a connection: {connections:#?}");
    ensure!(figures.last_attempt == 2, "the owner's restart makes attempt 2: {figures:?}");
    let state = get_served(&search_url).await?;
    ensure!(
        state["status"] == "completed" && state["attempt"] == 2,
        "the search's final state: {state}"
    );
    let link = state["result"]["download"]["url"].as_str().context("download link")?;
    for node in &cluster.nodes {
        let response = http().get(node.url(link)).send().await?;
        ensure!(
            response.status() == StatusCode::OK,
            "download on {}: {}",
            node.url(""),
            response.status()
        );
    }

    println!("--- every acknowledged write reads back on every node");
    let mut expected: HashMap<String, Value> = HashMap::new();
    for report in &reports {
        expected.extend(report.expected.clone());
    }
    expected.extend(acknowledged_probes);
    for (index, node) in cluster.nodes.iter().enumerate() {
        let client = http();
        for (id, data) in &expected {
            let url = node.url(&format!("/api/sessions/{id}"));
            let response = client.get(&url).send().await?;
            ensure!(
                response.status() == StatusCode::OK,
                "node {index}: {id}: {}",
                response.status()
            );
            let session: Value = response.json().await?;
            ensure!(
                &session["data"] == data,
                "node {index}: session {id} is {session}, wanted {data}"
            );
        }
    }
    for (index, node) in cluster.nodes.iter().enumerate() {
        let log = node.log();
        ensure!(!log.contains("panicked"), "node {index} panicked:\n{log}");
        let errors: Vec<&str> = log.lines().filter(|line| line.contains(" ERROR ")).collect();
        println!("node {index}: {} ERROR lines in its log", errors.len());
        for line in errors.iter().take(5) {
            println!("  {line}");
        }
    }

    println!("--- figures");
    println!("sessions read back: {} on each of 3 nodes", expected.len());
    for restart in &restarts {
        println!(
            "node {} upgrade: exited {:?} after SIGTERM, back (ready, caught up) after {:?}",
            restart.node,
            restart.exited - restart.stopped,
            restart.back - restart.stopped,
        );
    }
    for (report, name) in reports.iter().zip(["through every node", "skipping the node upgraded"]) {
        println!(
            "writer {name}: {} writes acknowledged ({} creates, {} updates), {} tries sent again",
            report.num_acknowledged, report.num_creates, report.num_updates, report.num_retried,
        );
        for restart in &restarts {
            let pause = longest_pause(&report.acknowledged_at, restart);
            println!(
                "  node {} upgrade: longest pause in acknowledged writes {pause:?}",
                restart.node
            );
        }
        for (node, sent, took, how) in &report.slow_attempts {
            let at = sent.saturating_duration_since(started);
            println!("  slow try: node {node} at {at:?} took {took:?}: {how}");
        }
    }
    if let Some(pause) = leadership_pause {
        println!("old-build leader paused {pause:?} until a new-build node led");
    }
    println!(
        "SSE: {} events over {} connections ({} reconnects: {} resumed right after Last-Event-ID, {} started over with a snapshot, {} found a new attempt); last attempt {}",
        figures.num_events,
        connections.len(),
        figures.num_reconnects,
        figures.num_resumed_exactly,
        figures.num_started_over,
        figures.num_new_attempts,
        figures.last_attempt
    );
    Ok(())
}

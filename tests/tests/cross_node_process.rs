//! Searches across a 3-node cluster: SSE on nodes that do not run the search (relayed
//! from the owner), resuming through every node, downloads from every node (one joined
//! after the search included), and cancel through a node that does not run it.

use std::time::Duration;

use calamine::Reader;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shoal_tests::{get_json, read_sse, wait_until, SseEvent, TestCluster};

const FORM: Duration = Duration::from_secs(40);
const STREAM: Duration = Duration::from_secs(60);

fn seq(event: &SseEvent) -> (u32, u64) {
    let (attempt, seq) = event.id.as_deref().unwrap().split_once(':').unwrap();
    (attempt.parse().unwrap(), seq.parse().unwrap())
}

fn assert_contiguous(after: u64, events: &[SseEvent], terminal: &str) {
    let seqs: Vec<u64> = events.iter().map(|event| seq(event).1).collect();
    let expected: Vec<u64> = (after + 1..=after + events.len() as u64).collect();
    assert_eq!(seqs, expected, "gap or duplicate: {events:?}");
    assert_eq!(events.last().map(|event| event.event.as_str()), Some(terminal), "{events:?}");
    let terminals = events
        .iter()
        .filter(|e| ["completed", "failed", "cancelled"].contains(&e.event.as_str()))
        .count();
    assert_eq!(terminals, 1);
}

async fn start_search(url: &str, body: Value) -> anyhow::Result<String> {
    let response =
        reqwest::Client::new().post(format!("{url}/api/searches")).json(&body).send().await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    Ok(response.json::<Value>().await?["id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn sse_relayed_from_the_owner_resumes_through_every_node() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = TestCluster::start(dir.path(), 3, &["--sample-page-delay-ms", "60"])?;
    cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let body =
        json!({"ufs": ["SP", "RJ", "MG"], "date_from": "2025-01-01", "date_to": "2025-06-30"});
    let id = start_search(&cluster.nodes[0].url(""), body.clone()).await?;
    let events_url = |node: usize| cluster.nodes[node].url(&format!("/api/searches/{id}/events"));

    tracing::info!("--- followers on the two nodes that do not run the search");
    let followers: Vec<_> = [1, 2]
        .into_iter()
        .map(|node| {
            let url = events_url(node);
            tokio::spawn(async move { read_sse(&url, None, usize::MAX, STREAM).await })
        })
        .collect();

    tracing::info!("--- one client hops from node 1 to node 2 to node 0 with Last-Event-ID");
    let (_, first) = read_sse(&events_url(1), None, 4, STREAM).await?;
    assert_eq!(first[0].event, "snapshot");
    let (_, second) =
        read_sse(&events_url(2), first.last().unwrap().id.as_deref(), 4, STREAM).await?;
    let (_, rest) =
        read_sse(&events_url(0), second.last().unwrap().id.as_deref(), usize::MAX, STREAM).await?;
    let mut hopped = first[1..].to_vec();
    hopped.extend(second);
    hopped.extend(rest);
    assert!(
        hopped.iter().all(|event| event.event != "snapshot"),
        "resumes replay, they do not restart"
    );
    assert_contiguous(seq(&first[0]).1, &hopped, "completed");

    for follower in followers {
        let (status, events) = follower.await??;
        assert_eq!(status, 200);
        assert_eq!(events[0].event, "snapshot");
        assert_contiguous(seq(&events[0]).1, &events[1..], "completed");
    }

    tracing::info!("--- the report downloads from every node, and from a node that joined later");
    let state = get_json(&cluster.nodes[2].url(&format!("/api/searches/{id}"))).await?;
    let link = state["result"]["download"]["url"].as_str().unwrap().to_string();
    let total = state["result"]["total_records"].as_u64().unwrap();
    let fourth = cluster.add_node(&[1])?;
    let url = cluster.nodes[0].url("/api/cluster");
    wait_until("the new node is a member", FORM, || {
        let url = url.clone();
        async move { Ok(get_json(&url).await?["learners"].as_array().is_some_and(|l| !l.is_empty())) }
    })
    .await?;
    for node in [0, 1, 2, fourth] {
        let response = reqwest::get(cluster.nodes[node].url(&link)).await?;
        assert_eq!(response.status(), StatusCode::OK, "download on node {node}");
        let bytes = response.bytes().await?.to_vec();
        let mut workbook: calamine::Xlsx<_> = calamine::Xlsx::new(std::io::Cursor::new(bytes))?;
        assert_eq!(workbook.worksheet_range("Resultados")?.height() as u64, total + 1);
    }

    tracing::info!("--- a tracker created on one node takes events posted on the others");
    let client = reqwest::Client::new();
    let tracker: Value = client
        .post(cluster.nodes[0].url("/api/trackers"))
        .json(&json!({"total": 2}))
        .send()
        .await?
        .json()
        .await?;
    let tracker_id = tracker["id"].as_str().unwrap();
    let events_path = format!("/api/trackers/{tracker_id}/events");
    let follower = {
        let url = cluster.nodes[2].url(&events_path);
        tokio::spawn(async move { read_sse(&url, None, usize::MAX, STREAM).await })
    };
    for (node, body) in [
        (1, json!({"type": "progress", "data": {"done": 1}})),
        (2, json!({"type": "progress", "data": {"done": 2}})),
        (1, json!({"type": "completed", "data": {"rows": 2}})),
    ] {
        let response =
            client.post(cluster.nodes[node].url(&events_path)).json(&body).send().await?;
        assert!(response.status().is_success(), "{}", response.text().await?);
    }
    let (_, events) = follower.await??;
    assert_eq!(events[0].event, "snapshot");
    assert_contiguous(seq(&events[0]).1, &events[1..], "completed");

    tracing::info!("--- cancel through a node that does not run the search");
    let slow = json!({"ufs": ["AC", "AL"], "date_from": "2025-01-01", "date_to": "2025-12-31"});
    let id = start_search(&cluster.nodes[0].url(""), slow).await?;
    let cancel = reqwest::Client::new()
        .delete(cluster.nodes[2].url(&format!("/api/searches/{id}")))
        .send()
        .await?;
    assert_eq!(cancel.status(), StatusCode::ACCEPTED);
    let (_, events) = read_sse(
        &cluster.nodes[1].url(&format!("/api/searches/{id}/events")),
        None,
        usize::MAX,
        STREAM,
    )
    .await?;
    assert_eq!(events.last().unwrap().event, "cancelled", "{events:?}");
    Ok(())
}

/// Follows `path` on `node`, reconnecting with the last event id whenever the stream ends
/// before a terminal event, and returns every event received.
async fn follow_to_the_end(
    cluster: &TestCluster,
    node: usize,
    path: &str,
) -> anyhow::Result<Vec<SseEvent>> {
    let mut events: Vec<SseEvent> = Vec::new();
    let started = std::time::Instant::now();
    loop {
        let last = events.iter().rev().find_map(|event| event.id.clone());
        let (status, more) =
            read_sse(&cluster.nodes[node].url(path), last.as_deref(), usize::MAX, STREAM).await?;
        events.extend(more);
        if events
            .last()
            .is_some_and(|e| ["completed", "failed", "cancelled"].contains(&e.event.as_str()))
            || status == 204
        {
            return Ok(events);
        }
        anyhow::ensure!(
            started.elapsed() < STREAM,
            "no terminal event after {STREAM:?}: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_live_node_takes_over_when_the_owner_dies() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = TestCluster::start(dir.path(), 3, &["--sample-page-delay-ms", "150"])?;
    let leader = cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let owner = (leader + 1) % 3;
    let watcher = (leader + 2) % 3;
    let body = json!({"ufs": ["SP", "RJ"], "date_from": "2025-01-01", "date_to": "2025-06-30"});
    let id = start_search(&cluster.nodes[owner].url(""), body).await?;
    let path = format!("/api/searches/{id}/events");
    let client = reqwest::Client::new();
    let tracker: Value = client
        .post(cluster.nodes[owner].url("/api/trackers"))
        .json(&json!({"total": 1}))
        .send()
        .await?
        .json()
        .await?;
    let tracker_id = tracker["id"].as_str().unwrap().to_string();

    let (_, first) = read_sse(&cluster.nodes[watcher].url(&path), None, 4, STREAM).await?;
    assert_eq!(seq(&first[0]).0, 1);
    tracing::info!(owner, "--- SIGKILL the owner mid-search");
    cluster.nodes[owner].kill();

    let mut events = first.clone();
    let last = first.last().unwrap().id.clone();
    let (_, more) =
        read_sse(&cluster.nodes[watcher].url(&path), last.as_deref(), usize::MAX, STREAM).await?;
    events.extend(more);
    if events.last().is_none_or(|e| e.event != "completed") {
        events.extend(follow_to_the_end(&cluster, watcher, &path).await?);
    }
    assert_eq!(events.last().unwrap().event, "completed", "{events:?}");
    assert!(
        events.iter().any(|event| event.id.as_deref().is_some_and(|id| id.starts_with("2:"))),
        "{events:?}"
    );
    let terminals = events
        .iter()
        .filter(|e| ["completed", "failed", "cancelled"].contains(&e.event.as_str()))
        .count();
    assert_eq!(terminals, 1, "exactly one final result: {events:?}");

    let state = get_json(&cluster.nodes[leader].url(&format!("/api/searches/{id}"))).await?;
    assert_eq!(
        (state["status"].as_str(), state["attempt"].as_u64()),
        (Some("completed"), Some(2)),
        "{state}"
    );
    assert_eq!(state["owner"], cluster.node_id(leader).await?);
    let link = state["result"]["download"]["url"].as_str().unwrap();
    assert_eq!(reqwest::get(cluster.nodes[watcher].url(link)).await?.status(), StatusCode::OK);

    tracing::info!("--- the dead owner's tracker takes events again, through its new owner");
    let events = cluster.nodes[watcher].url(&format!("/api/trackers/{tracker_id}/events"));
    wait_until("the tracker has a live owner", FORM, || {
        let (client, events) = (client.clone(), events.clone());
        async move {
            let response = client
                .post(&events)
                .json(&json!({"type": "completed", "data": {"ok": true}}))
                .send()
                .await?;
            Ok(response.status().is_success())
        }
    })
    .await?;
    let tracker =
        get_json(&cluster.nodes[watcher].url(&format!("/api/trackers/{tracker_id}"))).await?;
    assert_eq!(
        (tracker["status"].as_str(), tracker["attempt"].as_u64()),
        (Some("completed"), Some(2)),
        "{tracker}"
    );
    Ok(())
}

#[tokio::test]
async fn a_full_queue_places_searches_on_other_nodes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let args = ["--workers", "1", "--queue-capacity", "1", "--sample-page-delay-ms", "1000"];
    let cluster = TestCluster::start(dir.path(), 3, &args)?;
    cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let body = json!({"ufs": ["AC"], "date_from": "2025-01-01", "date_to": "2025-12-31"});
    let client = reqwest::Client::new();
    let mut owners = Vec::new();
    // Each node holds one running and one queued part: six searches fill the cluster.
    for _ in 0..6 {
        let response =
            client.post(cluster.nodes[0].url("/api/searches")).json(&body).send().await?;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{}", response.text().await?);
        let id = response.json::<Value>().await?["id"].as_str().unwrap().to_string();
        let state = get_json(&cluster.nodes[0].url(&format!("/api/searches/{id}"))).await?;
        owners.push(state["owner"].as_u64().unwrap());
    }
    owners.sort_unstable();
    owners.dedup();
    assert_eq!(owners.len(), 3, "searches spread over all three nodes");
    let refused = client.post(cluster.nodes[0].url("/api/searches")).json(&body).send().await?;
    assert_eq!(
        refused.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "503 only when every queue is full"
    );
    assert!(refused.headers().contains_key("retry-after"));
    Ok(())
}

/// A search whose node is cut off from the quorum for a few seconds while it runs (the
/// two other nodes SIGSTOPped, as stalled VMs are) does not fail: its milestones, report
/// and end wait for the quorum to come back, then the search completes. Before, the
/// first write refused as cut off failed it ("could not record the end of the search:
/// this node is cut off from a quorum"), though an election usually ends within a second.
#[tokio::test]
async fn a_search_cut_off_from_the_quorum_for_a_while_completes_once_it_is_back(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // About 24 pages a UF at 150 ms each: the search runs into the cut-off.
    let cluster = TestCluster::start(dir.path(), 3, &["--sample-page-delay-ms", "150"])?;
    cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let body = json!({"ufs": ["SP", "RJ"], "date_from": "2025-01-01", "date_to": "2025-12-31"});
    let id = start_search(&cluster.nodes[0].url(""), body).await?;
    let state_path = format!("/api/searches/{id}");
    let owner_id = get_json(&cluster.nodes[0].url(&state_path)).await?["owner"].as_u64();
    let mut owner = None;
    for index in 0..3 {
        if Some(cluster.node_id(index).await?) == owner_id {
            owner = Some(index);
        }
    }
    let owner = owner.expect("the owner is one of the three nodes");
    let others: Vec<usize> = (0..3).filter(|index| *index != owner).collect();
    let path = format!("/api/searches/{id}/events");
    let (_, first) = read_sse(&cluster.nodes[owner].url(&path), None, 3, STREAM).await?;
    assert_eq!(first[0].event, "snapshot", "{first:?}");

    tracing::info!(owner, "--- SIGSTOP the two other nodes: the owner is cut off");
    for index in &others {
        cluster.nodes[*index].signal("STOP")?;
    }
    // Past the owner's contact limit (twice the 300 ms election timeout) and past the
    // three tries of about 3 s the end of a search had before, within the 15 s patience.
    let cut_off = cluster.nodes[owner].url("/api/health/ready");
    wait_until("the owner says it is cut off", FORM, || {
        let url = cut_off.clone();
        async move { Ok(reqwest::get(&url).await?.status() == StatusCode::SERVICE_UNAVAILABLE) }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    tracing::info!("--- SIGCONT: the quorum is back");
    for index in &others {
        cluster.nodes[*index].signal("CONT")?;
    }

    // The owner may answer 503 for a moment after the pause, until it hears the leader.
    let events = follow_to_the_end(&cluster, owner, &path).await?;
    assert_eq!(events.last().unwrap().event, "completed", "{events:?}");
    let state = get_json(&cluster.nodes[others[0]].url(&state_path)).await?;
    assert_eq!(state["status"], "completed", "{state}");
    assert_eq!(state["attempt"], 1, "the owner finished it, no other node took over: {state}");
    let link = state["result"]["download"]["url"].as_str().unwrap();
    for index in 0..3 {
        assert_eq!(reqwest::get(cluster.nodes[index].url(link)).await?.status(), StatusCode::OK);
    }
    Ok(())
}

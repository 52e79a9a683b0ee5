//! Searches on the real `shoal` binary, followed over SSE: snapshot first, contiguous
//! event ids, one terminal event; resume with Last-Event-ID; many subscribers; cancel.

use std::time::Duration;

use calamine::Reader;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shoal_tests::{in_every_mode, read_sse, Backing, Mode, SseEvent, TestNode};

const READY: Duration = Duration::from_secs(30);
const STREAM: Duration = Duration::from_secs(60);

/// Starts the servers of `mode` and one node in it.
async fn start_node(
    mode: Mode,
    dir: &std::path::Path,
    extra_args: &[&str],
) -> anyhow::Result<(TestNode, Backing)> {
    let backing = Backing::start(mode, dir)?;
    let mut node = backing.start_node("n1", extra_args)?;
    node.wait_ready(READY).await?;
    Ok((node, backing))
}

async fn start_search(node: &TestNode, body: Value) -> anyhow::Result<String> {
    let response =
        reqwest::Client::new().post(node.url("/api/searches")).json(&body).send().await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await?;
    Ok(body["id"].as_str().unwrap().to_string())
}

fn seq(event: &SseEvent) -> u64 {
    let id = event.id.as_deref().expect("every event has an id");
    let (attempt, seq) = id.split_once(':').expect("id is attempt:seq");
    assert_eq!(attempt, "1");
    seq.parse().unwrap()
}

/// Asserts a stream from its first event: a snapshot, then contiguous ids, ending with
/// exactly one terminal event of `terminal` kind.
fn assert_well_formed(events: &[SseEvent], terminal: &str) {
    assert_eq!(events.first().map(|e| e.event.as_str()), Some("snapshot"), "{events:?}");
    assert_contiguous(seq(&events[0]), &events[1..], terminal);
}

fn assert_contiguous(after: u64, events: &[SseEvent], terminal: &str) {
    let seqs: Vec<u64> = events.iter().map(seq).collect();
    let expected: Vec<u64> = (after + 1..=after + events.len() as u64).collect();
    assert_eq!(seqs, expected, "gap or duplicate in {events:?}");
    let terminals: Vec<&str> = events
        .iter()
        .map(|event| event.event.as_str())
        .filter(|kind| ["completed", "failed", "cancelled"].contains(kind))
        .collect();
    assert_eq!(terminals, vec![terminal], "{events:?}");
    assert_eq!(events.last().unwrap().event, terminal);
}

in_every_mode!(a_five_uf_search_followed_over_sse);

async fn a_five_uf_search_followed_over_sse(mode: Mode) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (node, backing) = start_node(mode, dir.path(), &["--sample-page-delay-ms", "20"]).await?;
    let body = json!({"ufs": ["SP", "RJ", "MG", "BA", "PR"], "date_from": "2025-01-01", "date_to": "2025-06-30"});
    let id = start_search(&node, body).await?;
    let url = node.url(&format!("/api/searches/{id}/events"));

    let (status, events) = read_sse(&url, None, usize::MAX, STREAM).await?;
    assert_eq!(status, 200);
    assert_well_formed(&events, "completed");
    let parts = events.iter().filter(|event| event.event == "part_completed").count();
    let snapshot: Value = serde_json::from_str(&events[0].data)?;
    let already = snapshot["completed_parts"].as_u64().unwrap() as usize;
    assert_eq!(parts + already, 5);
    assert!(events.iter().any(|event| event.event == "progress"));

    let done: Value = serde_json::from_str(&events.last().unwrap().data)?;
    let state: Value = reqwest::get(node.url(&format!("/api/searches/{id}"))).await?.json().await?;
    assert_eq!(state["status"], "completed");
    assert_eq!(done["result"]["total_records"], state["result"]["total_records"]);
    let per_part: u64 =
        state["parts"].as_object().unwrap().values().map(|p| p["records"].as_u64().unwrap()).sum();
    assert_eq!(state["result"]["total_records"].as_u64(), Some(per_part));

    tracing::info!("--- the report downloads and reads back with one row per record");
    let download_url =
        backing.download_url(&node, state["result"]["download"]["url"].as_str().unwrap());
    if mode.storage() == "s3" {
        assert!(download_url.contains("X-Amz-Signature="), "a pre-signed URL: {download_url}");
        assert_eq!(backing.s3.as_ref().unwrap().objects().len(), 1, "the report is in the bucket");
    }
    let response = reqwest::get(&download_url).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await?.to_vec();
    let mut workbook: calamine::Xlsx<_> = calamine::Xlsx::new(std::io::Cursor::new(bytes))?;
    let rows = workbook.worksheet_range("Resultados")?;
    assert_eq!(rows.height() as u64, per_part + 1);

    tracing::info!("--- after the end, a new stream gets the snapshot and the terminal event");
    let (_, replay) = read_sse(&url, None, usize::MAX, STREAM).await?;
    assert_eq!(replay.first().unwrap().event, "snapshot");
    assert_eq!(replay.last().unwrap().event, "completed");
    let last_id = replay.last().unwrap().id.clone().unwrap();
    let (status, none) = read_sse(&url, Some(&last_id), usize::MAX, STREAM).await?;
    assert!(status == 204 || none.is_empty(), "a client that saw the end gets nothing more");
    Ok(())
}

in_every_mode!(reconnecting_with_last_event_id_has_no_gap_and_no_duplicate);

async fn reconnecting_with_last_event_id_has_no_gap_and_no_duplicate(
    mode: Mode,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (node, _backing) = start_node(mode, dir.path(), &["--sample-page-delay-ms", "40"]).await?;
    let body =
        json!({"ufs": ["SP", "RJ", "SC"], "date_from": "2025-01-01", "date_to": "2025-12-31"});
    let id = start_search(&node, body).await?;
    let url = node.url(&format!("/api/searches/{id}/events"));

    let (_, first) = read_sse(&url, None, 6, STREAM).await?;
    assert_eq!(first.len(), 6);
    assert_eq!(first[0].event, "snapshot");
    let last_id = first.last().unwrap().id.clone().unwrap();
    tracing::info!(%last_id, "--- reconnect");
    let (_, rest) = read_sse(&url, Some(&last_id), usize::MAX, STREAM).await?;
    assert!(
        rest.iter().all(|event| event.event != "snapshot"),
        "a resume replays, it does not restart"
    );
    let mut all = first[1..].to_vec();
    all.extend(rest);
    assert_contiguous(seq(&first[0]), &all, "completed");
    Ok(())
}

in_every_mode!(many_subscribers_each_get_every_event);

async fn many_subscribers_each_get_every_event(mode: Mode) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (node, _backing) = start_node(mode, dir.path(), &["--sample-page-delay-ms", "40"]).await?;
    let body = json!({"ufs": ["SP", "RJ"], "date_from": "2025-01-01", "date_to": "2025-12-31"});
    let id = start_search(&node, body).await?;
    let url = node.url(&format!("/api/searches/{id}/events"));
    let readers: Vec<_> = (0..25)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { read_sse(&url, None, usize::MAX, STREAM).await })
        })
        .collect();
    for reader in readers {
        let (_, events) = reader.await??;
        assert_well_formed(&events, "completed");
    }
    Ok(())
}

in_every_mode!(cancel_ends_the_stream_with_cancelled);

async fn cancel_ends_the_stream_with_cancelled(mode: Mode) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (node, _backing) = start_node(mode, dir.path(), &["--sample-page-delay-ms", "300"]).await?;
    let body = json!({"ufs": ["SP", "RJ"], "date_from": "2025-01-01", "date_to": "2025-12-31"});
    let id = start_search(&node, body).await?;
    let url = node.url(&format!("/api/searches/{id}/events"));
    let follower = tokio::spawn({
        let url = url.clone();
        async move { read_sse(&url, None, usize::MAX, STREAM).await }
    });
    let (_, first) = read_sse(&url, None, 2, STREAM).await?; // running: snapshot and a page
    assert_eq!(first.len(), 2);
    let cancel =
        reqwest::Client::new().delete(node.url(&format!("/api/searches/{id}"))).send().await?;
    assert_eq!(cancel.status(), StatusCode::ACCEPTED);
    let (_, events) = follower.await??;
    assert_well_formed(&events, "cancelled");
    let state: Value = reqwest::get(node.url(&format!("/api/searches/{id}"))).await?.json().await?;
    assert_eq!(state["status"], "cancelled");
    Ok(())
}

in_every_mode!(sse_headers_retry_and_keep_alive_comments);

async fn sse_headers_retry_and_keep_alive_comments(mode: Mode) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let args = ["--sample-page-delay-ms", "1500", "--sse-keep-alive-ms", "200"];
    let (node, _backing) = start_node(mode, dir.path(), &args).await?;
    let id = start_search(
        &node,
        json!({"ufs": ["AC"], "date_from": "2025-01-01", "date_to": "2025-12-31"}),
    )
    .await?;
    let mut response = reqwest::get(node.url(&format!("/api/searches/{id}/events"))).await?;
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    assert!(response.headers()["content-type"].to_str()?.starts_with("text/event-stream"));
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(text.contains("retry: 2000") && text.lines().any(|line| line.starts_with(':'))) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk()).await??;
        text.push_str(&String::from_utf8_lossy(&chunk.expect("the stream stays open")));
    }
    Ok(())
}

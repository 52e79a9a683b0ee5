//! The compatibility adapters against real servers: nodes sharing one `redis-server`
//! (the classic verification commands with the real `redis-cli`, events through pub/sub,
//! a Redis restart in the middle of a search), and reports in an S3 server that checks
//! signatures (pre-signed links that expire, expired reports deleted by shoal, and the
//! fallback when an upload fails).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use shoal_tests::{binary_on_path, read_sse, wait_until, Backing, Mode, TestNode};

const READY: Duration = Duration::from_secs(30);
const STREAM: Duration = Duration::from_secs(90);

async fn post(url: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
    let response = reqwest::Client::new().post(url).json(&body).send().await?;
    let status = response.status();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn get(url: &str) -> anyhow::Result<(StatusCode, Value)> {
    let response = reqwest::get(url).await?;
    let status = response.status();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn start_nodes(
    backing: &Backing,
    count: usize,
    args: &[&str],
) -> anyhow::Result<Vec<TestNode>> {
    let mut nodes = Vec::new();
    for index in 0..count {
        let mut node = backing.start_node(&format!("n{index}"), args)?;
        node.wait_ready(READY).await?;
        nodes.push(node);
    }
    Ok(nodes)
}

fn kinds(events: &[shoal_tests::SseEvent]) -> Vec<&str> {
    events.iter().map(|event| event.event.as_str()).collect()
}

#[tokio::test]
#[ignore = "needs redis-server; scripts/test installs it and runs this"]
async fn nodes_share_one_redis_as_the_classic_setup_did() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let backing = Backing::start(Mode::Redis, dir.path())?;
    let redis = backing.redis.as_ref().unwrap();
    let nodes = start_nodes(&backing, 2, &["--sample-page-delay-ms", "150"]).await?;
    let (a, b) = (&nodes[0], &nodes[1]);
    for node in &nodes {
        let log = node.log();
        assert!(log.contains(&format!("redis connected: 127.0.0.1:{}", redis.port)), "{log}");
        assert!(log.contains("[mode: redis]"), "{log}");
        assert_eq!(get(&node.url("/api/health")).await?.1["mode"], "redis");
    }

    tracing::info!("--- a session written on one node is read on the other; KEYS lists it");
    let (status, session) =
        post(&a.url("/api/sessions"), json!({"data": {"user": "ana"}, "ttl_secs": 600})).await?;
    assert_eq!(status, StatusCode::CREATED);
    let id = session["id"].as_str().unwrap();
    let (status, read) = get(&b.url(&format!("/api/sessions/{id}"))).await?;
    assert_eq!((status, read["data"].clone()), (StatusCode::OK, json!({"user": "ana"})));
    let keys = redis.cli(&["KEYS", "session:*"])?;
    assert!(keys.lines().any(|line| line.trim() == format!("session:{id}")), "{keys}");
    let ttl: u64 = redis.cli(&["TTL", &format!("session:{id}")])?.trim().parse()?;
    assert!((590..=600).contains(&ttl), "TTL {ttl}");
    let stored: Value = serde_json::from_str(&redis.cli(&["GET", &format!("session:{id}")])?)?;
    assert_eq!(stored["data"], json!({"user": "ana"}));

    tracing::info!("--- PSUBSCRIBE sees a search's events; TTL of its tracker is at most 300");
    let mut psubscribe = Command::new(binary_on_path("redis-cli").unwrap())
        .args(["-p", &redis.port.to_string(), "PSUBSCRIBE", "bidiq:progress:*:events"])
        .stdout(Stdio::piped())
        .spawn()?;
    let lines = BufReader::new(psubscribe.stdout.take().unwrap());
    let (sender, received) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    // The subscription is confirmed before the search starts.
    let confirmed = received.recv_timeout(Duration::from_secs(5))?;
    assert_eq!(confirmed, "psubscribe");
    let (status, started) = post(
        &a.url("/api/searches"),
        json!({"ufs": ["SP", "RJ"], "date_from": "2025-01-01", "date_to": "2025-03-31"}),
    )
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    let search = started["id"].as_str().unwrap().to_string();
    let ttl: i64 = redis.cli(&["TTL", &format!("bidiq:progress:{search}")])?.trim().parse()?;
    assert!((1..=300).contains(&ttl), "TTL {ttl}");
    let log = a.log();
    assert!(log.contains(&format!("created progress tracker: {search} (2 UFs) [mode: redis]")));

    tracing::info!("--- the other node streams it over SSE, fed by SUBSCRIBE");
    let url = b.url(&format!("/api/searches/{search}/events"));
    let (status, events) = read_sse(&url, None, usize::MAX, STREAM).await?;
    assert_eq!(status, 200);
    assert_eq!(events.first().unwrap().event, "snapshot", "{:?}", kinds(&events));
    assert_eq!(events.last().unwrap().event, "completed", "{:?}", kinds(&events));
    assert!(events.iter().any(|event| event.event == "progress"), "{:?}", kinds(&events));
    let channel = format!("bidiq:progress:{search}:events");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    let done = |line: &String| line.contains("\"event\":\"completed\"");
    while Instant::now() < deadline && !seen.iter().any(done) {
        if let Ok(line) = received.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    let _ = psubscribe.kill();
    let _ = psubscribe.wait();
    assert!(seen.contains(&channel), "PSUBSCRIBE saw {seen:?}");
    assert!(seen.iter().any(|line| line.contains("\"event\":\"completed\"")), "{seen:?}");

    tracing::info!("--- the report is in Redis and downloads from the other node");
    let (_, state) = get(&b.url(&format!("/api/searches/{search}"))).await?;
    let download = &state["result"]["download"];
    let keys = redis.cli(&["KEYS", "bidiq:report:*"])?;
    assert!(keys.contains(&format!("bidiq:report:{}", download["id"].as_str().unwrap())));
    let response = reqwest::get(b.url(download["url"].as_str().unwrap())).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await?.starts_with(b"PK"), "an xlsx is a zip");

    tracing::info!("--- a tracker created on one node takes events on the other");
    let (status, tracker) =
        post(&a.url("/api/trackers"), json!({"total": 2, "label": "import"})).await?;
    assert_eq!(status, StatusCode::CREATED);
    let tracker = tracker["id"].as_str().unwrap().to_string();
    let events_url = a.url(&format!("/api/trackers/{tracker}/events"));
    let follower = tokio::spawn({
        let url = events_url.clone();
        async move { read_sse(&url, None, usize::MAX, STREAM).await }
    });
    let posted = b.url(&format!("/api/trackers/{tracker}/events"));
    let tracker_channel = format!("bidiq:progress:{tracker}:events");
    wait_until("the follower's node subscribed", Duration::from_secs(10), || {
        let numsub = redis.cli(&["PUBSUB", "NUMSUB", &tracker_channel]);
        async move { Ok(numsub?.lines().nth(1).is_some_and(|count| count.trim() != "0")) }
    })
    .await?;
    let (status, _) = post(&posted, json!({"type": "progress", "data": {"done": 1}})).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = post(&posted, json!({"type": "completed", "data": {"rows": 2}})).await?;
    assert_eq!(status, StatusCode::OK);
    let (_, events) = follower.await??;
    assert_eq!(kinds(&events), vec!["snapshot", "progress", "completed"]);
    let (status, refused) = post(&posted, json!({"type": "progress", "data": {}})).await?;
    assert_eq!((status, refused["error"].clone()), (StatusCode::CONFLICT, json!("finished")));

    tracing::info!("--- a cancel sent to the other node reaches the node that runs the search");
    let (_, started) = post(
        &a.url("/api/searches"),
        json!({"ufs": ["MG"], "date_from": "2025-01-01", "date_to": "2025-12-31"}),
    )
    .await?;
    let search = started["id"].as_str().unwrap().to_string();
    let cancel = reqwest::Client::new().delete(b.url(&format!("/api/searches/{search}"))).send();
    assert_eq!(cancel.await?.status(), StatusCode::ACCEPTED);
    wait_until("the search is cancelled", Duration::from_secs(10), || {
        let url = b.url(&format!("/api/searches/{search}"));
        async move { Ok(get(&url).await?.1["status"] == "cancelled") }
    })
    .await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs redis-server; scripts/test installs it and runs this"]
async fn a_redis_restart_mid_search_and_the_stream_resumes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut backing = Backing::start(Mode::Redis, dir.path())?;
    let nodes = start_nodes(&backing, 2, &["--sample-page-delay-ms", "200"]).await?;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (_, started) = post(
        &a.url("/api/searches"),
        json!({"ufs": ["SP", "RJ"], "date_from": "2025-01-01", "date_to": "2025-06-30"}),
    )
    .await?;
    let search = started["id"].as_str().unwrap().to_string();
    let followers: Vec<_> = nodes
        .iter()
        .map(|node| {
            let url = node.url(&format!("/api/searches/{search}/events"));
            tokio::spawn(async move { read_sse(&url, None, usize::MAX, STREAM).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;

    tracing::info!("--- redis goes away: requests fail fast with 503, then it comes back");
    let redis = backing.redis.as_mut().unwrap();
    redis.stop();
    let asked = Instant::now();
    let response = reqwest::Client::new()
        .post(b.url("/api/sessions"))
        .json(&json!({}))
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert!(asked.elapsed() < Duration::from_secs(3), "failed in {:?}", asked.elapsed());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.restart()?;

    for follower in followers {
        let (status, events) = follower.await??;
        assert_eq!(status, 200);
        assert_eq!(events.first().unwrap().event, "snapshot");
        assert_eq!(
            events.last().unwrap().event,
            "completed",
            "the stream ends with the search: {:?}",
            kinds(&events)
        );
        let terminals = events.iter().filter(|e| e.event == "completed").count();
        assert_eq!(terminals, 1);
    }
    let (status, state) = get(&b.url(&format!("/api/searches/{search}"))).await?;
    assert_eq!((status, state["status"].clone()), (StatusCode::OK, json!("completed")));
    for node in &nodes {
        assert!(node.log().contains("subscriptions restored"), "{}", node.log());
    }
    let (status, _) = post(&a.url("/api/sessions"), json!({})).await?;
    assert_eq!(status, StatusCode::CREATED, "commands work again after the restart");
    Ok(())
}

#[tokio::test]
#[ignore = "needs redis-server and s3s-fs; scripts/test installs them and runs this"]
async fn s3_links_expire_and_shoal_deletes_expired_reports() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Redis + S3: state in Redis, reports in the bucket.
    let backing = Backing::start(Mode::RedisS3, dir.path())?;
    let args = [
        "--sample-page-delay-ms",
        "5",
        "--download-url-ttl",
        "2",
        "--report-ttl",
        "4",
        "--s3-sweep-interval",
        "1",
    ];
    let nodes = start_nodes(&backing, 1, &args).await?;
    let node = &nodes[0];
    assert_eq!(get(&node.url("/api/health")).await?.1["storage"], "s3");
    let (_, started) = post(
        &format!("{}?wait=true", node.url("/api/searches")),
        json!({"ufs": ["AC"], "date_from": "2025-01-01", "date_to": "2025-01-31"}),
    )
    .await?;
    let url = started["result"]["download"]["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&backing.s3.as_ref().unwrap().endpoint()), "{url}");
    assert!(node.log().contains("Excel uploaded to storage:"), "{}", node.log());
    let response = reqwest::get(&url).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await?.starts_with(b"PK"));

    tracing::info!("--- a tampered signature is refused by the S3 server");
    let signature = url.split("X-Amz-Signature=").nth(1).unwrap().split('&').next().unwrap();
    let flipped = if signature.ends_with('0') { "1" } else { "0" };
    let forged = format!("{}{flipped}", &signature[..signature.len() - 1]);
    let tampered = url.replace(signature, &forged);
    assert_eq!(reqwest::get(&tampered).await?.status(), StatusCode::FORBIDDEN);

    tracing::info!("--- after --download-url-ttl the link no longer works");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(reqwest::get(&url).await?.status(), StatusCode::FORBIDDEN);

    tracing::info!("--- after --report-ttl shoal deletes the object itself");
    let s3 = backing.s3.as_ref().unwrap();
    assert_eq!(s3.objects().len(), 1);
    wait_until("the expired report is deleted", Duration::from_secs(15), || async {
        Ok(s3.objects().is_empty())
    })
    .await?;
    assert!(node.log().contains("deleted expired reports from S3"));
    Ok(())
}

#[tokio::test]
#[ignore = "needs s3s-fs; scripts/test installs it and runs this"]
async fn a_failed_upload_falls_back_to_the_cluster_store() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let backing = Backing::start(Mode::ClusterS3, dir.path())?;
    // The same settings, but a wrong secret key: the server refuses every upload.
    let (args, mut envs) = backing.node_settings(shoal_tests::FAST_RAFT_ARGS);
    for (name, value) in &mut envs {
        if name == "AWS_SECRET_ACCESS_KEY" {
            *value = "not-the-secret".to_string();
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut node = TestNode::start_with(
        shoal_tests::free_port(),
        &dir.path().join("n1"),
        &[&args[..], &["--sample-page-delay-ms", "5"]].concat(),
        &envs,
    )?;
    node.wait_ready(READY).await?;
    let (_, done) = post(
        &format!("{}?wait=true", node.url("/api/searches")),
        json!({"ufs": ["AC"], "date_from": "2025-01-01", "date_to": "2025-01-31"}),
    )
    .await?;
    assert_eq!(done["status"], "completed", "{done}");
    let url = done["result"]["download"]["url"].as_str().unwrap();
    assert!(url.starts_with("/api/downloads/"), "a shoal link after the fallback: {url}");
    assert!(node.log().contains("uploading the report to S3 failed"), "{}", node.log());
    let response = reqwest::get(node.url(url)).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(backing.s3.as_ref().unwrap().objects().is_empty());
    Ok(())
}

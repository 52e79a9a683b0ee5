//! The real `shoal` binary on a loopback port: every session endpoint, durability of
//! acknowledged writes across SIGKILL, TTL expiry, and the CLI's behaviour.

use std::process::Command;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use reqwest::{header, StatusCode};
use serde_json::{json, Value};
use shoal_tests::{
    in_every_mode, shoal_binary, wait_until, Backing, Mode, TestNode, FAST_RAFT_ARGS,
};

const READY: Duration = Duration::from_secs(30);

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

in_every_mode!(every_session_endpoint_over_http);

async fn every_session_endpoint_over_http(mode: Mode) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let backing = Backing::start(mode, dir.path())?;
    let mut node = backing.start_node("n1", &[])?;
    node.wait_ready(READY).await?;
    let http = reqwest::Client::new();

    let log = node.log();
    let start_line =
        log.lines().find(|line| line.contains("shoal node started")).expect("start line");
    let mode_field = format!("mode=\"{}\"", mode.state());
    let mode_tag = format!("[mode: {}]", mode.state());
    for field in
        ["instance_id=", "node_id=", &mode_field, &mode_tag, "data_dir=", "addr=127.0.0.1:"]
    {
        assert!(start_line.contains(field), "start line lacks {field}: {start_line}");
    }

    let created = http
        .post(node.url("/api/sessions"))
        .json(&json!({"data": {"user": "ana"}, "ttl_secs": 300}))
        .send()
        .await?;
    assert_eq!(created.status(), StatusCode::CREATED);
    let cookie = created.headers()[header::SET_COOKIE].to_str()?.to_string();
    let session = json_of(created).await;
    let id = session["id"].as_str().unwrap().to_string();
    assert!(cookie.starts_with(&format!("shoal_session={id}")));
    let uri = node.url(&format!("/api/sessions/{id}"));

    let read = json_of(http.get(&uri).send().await?).await;
    assert_eq!(read["data"], json!({"user": "ana"}));
    let by_cookie = http
        .get(node.url("/api/session"))
        .header(header::COOKIE, format!("shoal_session={id}"))
        .send()
        .await?;
    assert_eq!(by_cookie.status(), StatusCode::OK);
    assert_eq!(json_of(by_cookie).await["id"], id.as_str());

    let patched =
        http.patch(&uri).header(header::IF_MATCH, "\"1\"").body(r#"{"cart":[3]}"#).send().await?;
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(json_of(patched).await["data"], json!({"user": "ana", "cart": [3]}));
    let conflict =
        http.patch(&uri).header(header::IF_MATCH, "\"1\"").body(r#"{"x":1}"#).send().await?;
    assert_eq!(conflict.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(json_of(conflict).await["error"], "version_mismatch");

    let replaced = http.put(&uri).json(&json!({"data": {"v": 3}})).send().await?;
    assert_eq!(json_of(replaced).await["version"], 3);
    assert_eq!(http.delete(&uri).send().await?.status(), StatusCode::NO_CONTENT);
    let gone = http.get(&uri).send().await?;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(gone).await["error"], "session_not_found");

    tracing::info!("--- bad input gets a 4xx and changes nothing");
    let kept = json_of(
        http.post(node.url("/api/sessions")).json(&json!({"data": {"n": 1}})).send().await?,
    )
    .await;
    let kept_uri = node.url(&format!("/api/sessions/{}", kept["id"].as_str().unwrap()));
    let bad = [
        http.post(node.url("/api/sessions"))
            .body("{not json")
            .header("content-type", "application/json"),
        http.post(node.url("/api/sessions")).json(&json!({"data": [1, 2]})),
        http.post(node.url("/api/sessions")).json(&json!({"ttl_secs": 0})),
        http.patch(&kept_uri).body("[1]").header("content-type", "application/json"),
        http.patch(&kept_uri).header(header::IF_MATCH, "\"7\"").json(&json!({"n": 2})),
        http.put(&kept_uri).json(&json!({"data": "text"})),
        http.delete(&kept_uri).header(header::IF_MATCH, "\"9\""),
    ];
    for request in bad {
        let status = request.send().await?.status();
        assert!(status.is_client_error(), "{status}");
    }
    let after = json_of(http.get(&kept_uri).send().await?).await;
    assert_eq!((after["data"].clone(), after["version"].clone()), (json!({"n": 1}), json!(1)));

    let health = json_of(http.get(node.url("/api/health")).send().await?).await;
    assert_eq!(health["mode"], mode.state());
    assert_eq!(health["storage"], mode.storage());
    assert_eq!(health["cluster"]["leader_id"], health["node_id"]);
    let metrics = http.get(node.url("/metrics")).send().await?.text().await?;
    assert!(metrics.contains("shoal_http_requests_total"), "{metrics}");
    let unknown = http.get(node.url("/nope")).send().await?;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(unknown).await["error"], "not_found");
    Ok(())
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut node = TestNode::start(&dir.path().join("n1"), FAST_RAFT_ARGS)?;
    node.wait_ready(READY).await?;
    let http = reqwest::Client::new();
    let url = node.url("/api/sessions");

    tracing::info!("--- write 1,000 sessions, 50 at a time");
    let acknowledged: Vec<(String, u64)> = stream::iter(0..1000_u64)
        .map(|n| {
            let request = http.post(&url).json(&json!({"data": {"n": n}})).send();
            async move {
                let response = request.await.expect("the node answers");
                assert_eq!(response.status(), StatusCode::CREATED);
                let body = json_of(response).await;
                (body["id"].as_str().unwrap().to_string(), n)
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;

    tracing::info!("--- SIGKILL right after the last acknowledgement, then restart");
    node.kill();
    node.restart()?;
    node.wait_ready(READY).await?;
    let log = node.log();
    assert!(log.contains("recovered raft state"), "restart did not recover:\n{log}");
    assert_eq!(
        log.matches("initialized a new single-node cluster").count(),
        1,
        "re-initialized:\n{log}"
    );

    let missing: Vec<String> = stream::iter(acknowledged)
        .map(|(id, n)| {
            let request = http.get(node.url(&format!("/api/sessions/{id}"))).send();
            async move {
                let response = request.await.expect("the node answers");
                if response.status() != StatusCode::OK {
                    return Some(format!("{id}: {}", response.status()));
                }
                let body = json_of(response).await;
                (body["data"] != json!({"n": n})).then(|| format!("{id}: {}", body["data"]))
            }
        })
        .buffer_unordered(50)
        .filter_map(|missing| async move { missing })
        .collect()
        .await;
    assert!(
        missing.is_empty(),
        "{} acknowledged sessions lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    Ok(())
}

#[tokio::test]
async fn a_one_second_ttl_expires() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut node = TestNode::start(&dir.path().join("n1"), FAST_RAFT_ARGS)?;
    node.wait_ready(READY).await?;
    let http = reqwest::Client::new();
    let created =
        json_of(http.post(node.url("/api/sessions")).json(&json!({"ttl_secs": 1})).send().await?)
            .await;
    let uri = node.url(&format!("/api/sessions/{}", created["id"].as_str().unwrap()));
    let started = std::time::Instant::now();

    // /metrics does not touch the session, so watching it lets the TTL run out.
    let metrics_url = node.url("/metrics");
    wait_until("the expiry removes the session", Duration::from_secs(10), || {
        let request = http.get(&metrics_url).send();
        async move {
            Ok(request.await?.text().await?.lines().any(|line| line == "shoal_sessions_live 0"))
        }
    })
    .await?;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "expired after {:?}",
        started.elapsed()
    );
    assert_eq!(http.get(&uri).send().await?.status(), StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn cli_help_and_refusals() -> anyhow::Result<()> {
    let help = Command::new(shoal_binary()).arg("--help").output()?;
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout)?;
    for flag in [
        "--listen",
        "--data-dir",
        "--node-id",
        "--session-ttl",
        "--max-session-bytes",
        "[env: PORT=",
        "[env: INSTANCE_ID=",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }

    let bad = Command::new(shoal_binary()).args(["--session-ttl", "0"]).output()?;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8(bad.stderr)?.contains("--session-ttl"));

    tracing::info!("--- a second node on the same data dir is refused with a clear message");
    let dir = tempfile::tempdir()?;
    let mut first = TestNode::start(&dir.path().join("n1"), FAST_RAFT_ARGS)?;
    first.wait_ready(READY).await?;
    let second = Command::new(shoal_binary())
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&first.data_dir)
        .output()?;
    assert!(!second.status.success());
    let stderr = String::from_utf8(second.stderr)?;
    assert!(stderr.contains("another node using this data dir"), "{stderr}");
    Ok(())
}

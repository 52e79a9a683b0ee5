//! Three nodes behind a real nginx running `deploy/nginx.conf`: requests spread over every
//! node, a session reads back through any of them, a search is followed over SSE and its
//! report downloaded, `/internal/*` is not reachable through it, and requests keep
//! succeeding after a node is killed.
//!
//! Needs Debian's nginx: `scripts/test` installs it and runs this test; plain `cargo test`
//! skips it as ignored.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use shoal_tests::balancer::{self, cookie_session, start_nginx};
use shoal_tests::{free_port, get_json, wait_until, TestCluster};

const FORM: Duration = Duration::from_secs(40);

#[tokio::test]
#[ignore = "needs nginx: scripts/test installs it and runs this test"]
async fn three_nodes_behind_nginx() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = TestCluster::start(dir.path(), 3, &["--sample-page-delay-ms", "30"])?;
    cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let ports: Vec<u16> = cluster.nodes.iter().map(|node| node.port).collect();
    let listen = free_port();
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;
    let _nginx = start_nginx(&nginx_dir, &ports, listen, None)?;
    let lb = format!("http://127.0.0.1:{listen}");
    let health_url = format!("{lb}/api/health");
    wait_until("nginx answers", FORM, || {
        let url = health_url.clone();
        async move { Ok(get_json(&url).await.is_ok()) }
    })
    .await?;

    let cookie = balancer::serves_like_one_node(&lb, 3, FORM).await?;
    let client = reqwest::Client::new();

    tracing::info!("--- /internal/* stays off the public side");
    for path in ["/internal/raft/vote", "//internal/raft/vote", "/%69nternal/raft/vote"] {
        let through_nginx = client.post(format!("{lb}{path}")).body("{}").send().await?;
        assert_eq!(through_nginx.status(), StatusCode::NOT_FOUND, "{path} through nginx");
    }
    let on_the_node = client.post(cluster.nodes[0].url("/internal/raft/vote")).send().await?;
    assert_eq!(on_the_node.status(), StatusCode::UNAUTHORIZED, "the node itself: unsigned");
    // A browser's write through nginx on a non-default port: its Origin matches the Host
    // nginx passes on, so it is not taken for a cross-site one.
    let same_origin =
        client.post(format!("{lb}/api/sessions")).header("origin", &lb).body("{}").send().await?;
    assert_eq!(same_origin.status(), StatusCode::CREATED);

    tracing::info!("--- a node dies: requests through nginx keep succeeding");
    cluster.nodes[2].kill();
    cluster.wait_converged(&[0, 1], 3, FORM).await?;
    for n in 0..20 {
        let response = client
            .post(format!("{lb}/api/sessions"))
            .json(&json!({"data": {"n": n}}))
            .send()
            .await?;
        let status = response.status();
        let answer = response.text().await?;
        assert_eq!(status, StatusCode::CREATED, "request {n} after the kill: {answer}");
        assert_eq!(cookie_session(&client, &lb, &cookie).await?["data"]["user"], "ana");
    }
    Ok(())
}

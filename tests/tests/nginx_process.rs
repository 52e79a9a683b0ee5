//! Three nodes behind a real nginx running `deploy/nginx.conf`: requests spread over every
//! node, a session reads back through any of them, a search is followed over SSE and its
//! report downloaded, `/internal/*` is not reachable through it, and requests keep
//! succeeding after a node is killed.
//!
//! Needs Debian's nginx: `scripts/test` installs it and runs this test; plain `cargo test`
//! skips it as ignored.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use shoal_tests::{free_port, get_json, read_sse, wait_until, TestCluster};

const FORM: Duration = Duration::from_secs(40);

struct Nginx(Child);

impl Drop for Nginx {
    /// SIGTERM, so that the master stops its workers (a killed master leaves them
    /// running); SIGKILL if it has not exited within 5 s.
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..50 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `deploy/nginx.conf` with the nodes' ports and `listen` into `dir` and starts nginx.
fn start_nginx(dir: &Path, node_ports: &[u16], listen: u16) -> anyhow::Result<Nginx> {
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx.conf"),
    )?;
    let mut servers = node_ports.iter();
    let mut config = String::new();
    for line in template.lines() {
        if line.contains("# shoal-node") {
            let Some(port) = servers.next() else { continue };
            config.push_str(&format!(
                "        server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;\n"
            ));
        } else if line.contains("# shoal-listen") {
            config.push_str(&format!("        listen 127.0.0.1:{listen};\n"));
        } else if line.trim() == "http {" {
            config.push_str(line);
            config.push('\n');
            // Everything nginx writes stays in the test's directory.
            for (directive, name) in [
                ("client_body_temp_path", "body"),
                ("proxy_temp_path", "proxy"),
                ("fastcgi_temp_path", "fastcgi"),
                ("uwsgi_temp_path", "uwsgi"),
                ("scgi_temp_path", "scgi"),
            ] {
                config.push_str(&format!("    {directive} {};\n", dir.join(name).display()));
            }
            config.push_str(&format!("    access_log {};\n", dir.join("access.log").display()));
        } else {
            config.push_str(line);
            config.push('\n');
        }
    }
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config)?;
    let globals = format!(
        "daemon off; master_process on; user root; pid {}; error_log {} warn;",
        dir.join("nginx.pid").display(),
        dir.join("error.log").display()
    );
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .args(["-g", &globals])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(Nginx(child))
}

/// Returns the session of `cookie`, read through the load balancer.
async fn cookie_session(client: &reqwest::Client, lb: &str, cookie: &str) -> anyhow::Result<Value> {
    Ok(client
        .get(format!("{lb}/api/session"))
        .header("cookie", cookie)
        .send()
        .await?
        .json()
        .await?)
}

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
    let _nginx = start_nginx(&nginx_dir, &ports, listen)?;
    let lb = format!("http://127.0.0.1:{listen}");
    let health_url = format!("{lb}/api/health");
    wait_until("nginx answers", FORM, || {
        let url = health_url.clone();
        async move { Ok(get_json(&url).await.is_ok()) }
    })
    .await?;

    tracing::info!("--- requests spread over every node");
    let client = reqwest::Client::new();
    let mut instances = BTreeSet::new();
    for _ in 0..30 {
        let health: Value = client.get(&health_url).send().await?.json().await?;
        instances.insert(health["instance_id"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(instances.len(), 3, "nginx reached {instances:?}");

    tracing::info!("--- a session created once reads back on every request");
    let created = client
        .post(format!("{lb}/api/sessions"))
        .json(&json!({"data": {"user": "ana"}}))
        .send()
        .await?;
    assert_eq!(created.status(), StatusCode::CREATED);
    let cookie = created.headers()["set-cookie"].to_str()?.split(';').next().unwrap().to_string();
    for _ in 0..12 {
        assert_eq!(cookie_session(&client, &lb, &cookie).await?["data"]["user"], "ana");
    }

    tracing::info!("--- a search followed over SSE through nginx, then its report downloaded");
    let started: Value = client
        .post(format!("{lb}/api/searches"))
        .json(&json!({"ufs": ["SP", "RJ"], "date_from": "2025-01-01", "date_to": "2025-03-31"}))
        .send()
        .await?
        .json()
        .await?;
    let events_url = format!("{lb}{}", started["events_url"].as_str().unwrap());
    let (status, events) = read_sse(&events_url, None, usize::MAX, FORM).await?;
    assert_eq!(status, 200);
    assert_eq!(events.first().map(|e| e.event.as_str()), Some("snapshot"));
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("completed"), "{events:?}");
    let done: Value = serde_json::from_str(&events.last().unwrap().data)?;
    let download = format!("{lb}{}", done["result"]["download"]["url"].as_str().unwrap());
    let response = client.get(&download).send().await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await?.starts_with(b"PK"), "an xlsx is a zip");

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

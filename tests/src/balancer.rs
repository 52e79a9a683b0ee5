//! What every load balancer in front of a cluster must show (nginx, HAProxy, the compose
//! file's nginx): requests spread over the nodes, a session read back on every request
//! whichever node answers, and a search followed over SSE to `completed` with its report
//! downloaded, all through the balancer at `lb`; and nginx running `deploy/nginx.conf`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::read_sse;

/// A running nginx; stopped when dropped.
#[derive(Debug)]
pub struct Nginx(Child);

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

/// Writes `deploy/nginx.conf` with the nodes' ports and `listen` into `dir` and starts
/// nginx, its logs in `dir` (`access.log` in nginx's default format, or in
/// `access_log_format` when given).
pub fn start_nginx(
    dir: &Path,
    node_ports: &[u16],
    listen: u16,
    access_log_format: Option<&str>,
) -> anyhow::Result<Nginx> {
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
            let access_log = dir.join("access.log");
            match access_log_format {
                Some(format) => {
                    config.push_str(&format!("    log_format shoal_test '{format}';\n"));
                    config.push_str(&format!(
                        "    access_log {} shoal_test;\n",
                        access_log.display()
                    ));
                }
                None => config.push_str(&format!("    access_log {};\n", access_log.display())),
            }
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

/// Checks the balancer at `lb` (`http://host:port`) against a cluster: at least
/// `instances` nodes answer 30 health requests, a session created once reads back 12
/// times, and a search streams to `completed` and its xlsx downloads. Returns the
/// session's cookie (`shoal_session=…`), whose data is `{"user": "ana"}`.
pub async fn serves_like_one_node(
    lb: &str,
    instances: usize,
    deadline: Duration,
) -> anyhow::Result<String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    tracing::info!("--- requests spread over every node");
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let health: Value = client.get(format!("{lb}/api/health")).send().await?.json().await?;
        seen.insert(health["instance_id"].as_str().unwrap_or_default().to_string());
    }
    anyhow::ensure!(seen.len() >= instances, "{lb} reached only {seen:?}");

    tracing::info!("--- a session created once reads back on every request");
    let created = client
        .post(format!("{lb}/api/sessions"))
        .json(&json!({"data": {"user": "ana"}}))
        .send()
        .await?;
    anyhow::ensure!(created.status() == StatusCode::CREATED, "create: {}", created.status());
    let cookie = created.headers()["set-cookie"].to_str()?.split(';').next().unwrap().to_string();
    for read in 0..12 {
        let session = cookie_session(&client, lb, &cookie).await?;
        anyhow::ensure!(session["data"]["user"] == "ana", "read {read}: {session}");
    }

    tracing::info!("--- a search followed over SSE, then its report downloaded");
    let started: Value = client
        .post(format!("{lb}/api/searches"))
        .json(&json!({"ufs": ["SP", "RJ"], "date_from": "2025-01-01", "date_to": "2025-03-31"}))
        .send()
        .await?
        .json()
        .await?;
    let events_url = format!("{lb}{}", started["events_url"].as_str().context("events_url")?);
    let (status, events) = read_sse(&events_url, None, usize::MAX, deadline).await?;
    anyhow::ensure!(status == 200, "events: {status}");
    anyhow::ensure!(events.first().map(|e| e.event.as_str()) == Some("snapshot"), "{events:?}");
    anyhow::ensure!(events.last().map(|e| e.event.as_str()) == Some("completed"), "{events:?}");
    let done: Value = serde_json::from_str(&events.last().unwrap().data)?;
    let download = done["result"]["download"]["url"].as_str().context("download url")?;
    let response = client.get(format!("{lb}{download}")).send().await?;
    anyhow::ensure!(response.status() == StatusCode::OK, "download: {}", response.status());
    anyhow::ensure!(response.bytes().await?.starts_with(b"PK"), "an xlsx is a zip");
    Ok(cookie)
}

/// Returns the session of `cookie`, read through the load balancer at `lb`.
pub async fn cookie_session(
    client: &reqwest::Client,
    lb: &str,
    cookie: &str,
) -> anyhow::Result<Value> {
    Ok(client
        .get(format!("{lb}/api/session"))
        .header("cookie", cookie)
        .send()
        .await?
        .json()
        .await?)
}

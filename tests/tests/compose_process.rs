//! `deploy/docker-compose.yml` on the real Docker engine, as a user runs it: three nodes
//! found by the service's DNS name behind nginx on one port; sessions and a search
//! followed over SSE to its report through nginx; the seed guide's verification loop;
//! `--scale shoal=5` and back to 3 with the membership checked at each step while a
//! writer runs; `down` then `up` with every session back; `docker kill` of the leader;
//! `docker network disconnect` of the leader (the majority serves, the isolated node says
//! 503, after reconnecting one leader and nothing lost).
//!
//! Needs a Docker engine; the images are built offline by `scripts/images` (no registry),
//! which these tests run themselves (cached). Ignored by plain `cargo test`; `scripts/test`
//! runs them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::StatusCode;
use serde_json::Value;
use shoal_tests::{balancer, create_numbered_session, free_port, get_served, wait_until};

const FORM: Duration = Duration::from_secs(120);
const SECRET: &str = "compose-test-secret-0123456789abcdef";
const IGNORED: &str = "needs a Docker engine; scripts/test builds the images and runs this test";

/// The tests share one engine and two cores: one compose project at a time.
static ENGINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `program args`, failing with its output unless it succeeds.
fn run(program: &str, args: &[&str], envs: &[(&str, String)]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .envs(envs.iter().map(|(name, value)| (*name, value.as_str())))
        .current_dir(repo())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}):\n{text}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(text)
}

/// Fails unless a Docker engine answers, and builds the images (cached) offline.
fn engine_with_images() -> anyhow::Result<()> {
    run("docker", &["info", "--format", "{{.ServerVersion}}"], &[])
        .context("no Docker engine answers")?;
    let binary = shoal_tests::shoal_binary().display().to_string();
    run("bash", &["scripts/images", "--binary", &binary], &[])?;
    Ok(())
}

/// One compose project of `deploy/docker-compose.yml`; `down -v` when dropped.
struct Compose {
    project: String,
    port: u16,
    command: Vec<String>,
}

impl Compose {
    /// Starts the project with `up -d` and `up_args` (`--scale shoal=1`, say).
    fn up(project: &str, up_args: &[&str]) -> anyhow::Result<Self> {
        // Compose v2 where installed, else docker-compose 1.29 (Debian's).
        let v2 = Command::new("docker").args(["compose", "version"]).output();
        let command = if v2.is_ok_and(|output| output.status.success()) {
            vec!["docker".to_string(), "compose".to_string()]
        } else {
            vec!["docker-compose".to_string()]
        };
        let compose = Self { project: project.to_string(), port: free_port(), command };
        compose.down(true).ok();
        let mut args = vec!["up", "-d"];
        args.extend(up_args);
        compose.run(&args)?;
        Ok(compose)
    }

    fn envs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SHOAL_CLUSTER_SECRET", SECRET.to_string()),
            ("SHOAL_RESP_PASSWORD", "compose-resp-password".to_string()),
            ("SHOAL_HTTP_PORT", self.port.to_string()),
            ("SHOAL_IMAGE", "shoal:latest".to_string()),
            ("NGINX_IMAGE", "shoal-nginx:offline".to_string()),
        ]
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full: Vec<&str> = self.command[1..].iter().map(String::as_str).collect();
        full.extend(["-f", "deploy/docker-compose.yml", "-p", &self.project]);
        full.extend(args);
        run(&self.command[0], &full, &self.envs())
    }

    fn down(&self, volumes: bool) -> anyhow::Result<String> {
        let mut args = vec!["down", "--remove-orphans", "-t", "60"];
        if volumes {
            args.push("-v");
        }
        self.run(&args)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Returns the ids of the shoal service's running containers.
    fn containers(&self) -> anyhow::Result<Vec<String>> {
        let ids = self.run(&["ps", "-q", "shoal"])?;
        let mut running = Vec::new();
        for id in ids.lines().map(str::trim).filter(|id| !id.is_empty()) {
            let state = run("docker", &["inspect", "-f", "{{.State.Running}}", id], &[])?;
            if state.trim() == "true" {
                running.push(id.to_string());
            }
        }
        Ok(running)
    }

    /// Returns the container whose address on the project's network is `ip`.
    fn container_at(&self, ip: &str) -> anyhow::Result<String> {
        for id in self.containers()? {
            if container_ip(&id)? == ip {
                return Ok(id);
            }
        }
        bail!("no container of {} has address {ip}", self.project)
    }

    fn network(&self) -> String {
        format!("{}_default", self.project)
    }

    fn logs(&self) -> String {
        self.run(&["logs", "--no-color", "--tail", "40"]).unwrap_or_else(|error| error.to_string())
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if let Err(error) = self.down(true) {
            eprintln!("cleaning up {}: {error}", self.project);
        }
    }
}

fn container_ip(id: &str) -> anyhow::Result<String> {
    let ip = run(
        "docker",
        &["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", id],
        &[],
    )?;
    Ok(ip.split_whitespace().next().unwrap_or_default().to_string())
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// The cluster as the node nginx picked sees it.
async fn cluster_view(compose: &Compose) -> anyhow::Result<Value> {
    let response = http().get(compose.url("/api/cluster")).send().await?;
    anyhow::ensure!(response.status() == StatusCode::OK, "/api/cluster: {}", response.status());
    Ok(response.json().await?)
}

/// Waits until every answer nginx gets agrees: a leader, `voters` voters, no learners,
/// no other Raft members.
async fn wait_members(compose: &Compose, voters: usize) -> anyhow::Result<Value> {
    let found = Arc::new(Mutex::new(Value::Null));
    let outcome = wait_until("the cluster has the expected members", FORM, || {
        let found = found.clone();
        async move {
            // Several answers, so that several nodes are asked.
            let mut views = Vec::new();
            for _ in 0..voters {
                views.push(cluster_view(compose).await?);
            }
            let first = views[0].clone();
            let agree = views.iter().all(|view| {
                view["leader_id"] == first["leader_id"] && view["voters"] == first["voters"]
            });
            let settled = !first["leader_id"].is_null()
                && first["voters"].as_array().map_or(0, Vec::len) == voters
                && first["learners"].as_array().is_none_or(Vec::is_empty)
                // Nodes that left stay in gossip's list for a while, as no Raft member.
                && first["members"].as_array().map_or(0, |members| {
                    members.iter().filter(|member| member["raft_role"] != "none").count()
                }) == voters;
            *found.lock().unwrap() = first;
            Ok(agree && settled)
        }
    })
    .await;
    let last = found.lock().unwrap().clone();
    outcome.with_context(|| format!("last view: {last}\nlogs:\n{}", compose.logs()))?;
    Ok(last)
}

/// The leader's container, from the members' addresses.
async fn leader_container(compose: &Compose) -> anyhow::Result<(u64, String)> {
    let view = cluster_view(compose).await?;
    let leader = view["leader_id"].as_u64().context("no leader")?;
    let members = view["members"].as_array().context("members")?;
    let member = members.iter().find(|member| member["node_id"] == leader).context("leader")?;
    let addr = member["addr"].as_str().context("addr")?;
    let ip = addr.rsplit_once(':').context("host:port")?.0;
    Ok((leader, compose.container_at(ip)?))
}

/// Creates sessions through nginx until stopped; returns the acknowledged ones.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(String, u64)>>,
    /// When each acknowledged write was sent.
    acknowledged_at: Arc<Mutex<Vec<Instant>>>,
}

impl Writer {
    fn start(url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged_at = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (stop, acknowledged_at) = (stop.clone(), acknowledged_at.clone());
            tokio::spawn(async move {
                let client = http();
                let mut acknowledged = Vec::new();
                let started = Instant::now();
                let mut n = 0_u64;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600)
                {
                    n += 1;
                    let sent = Instant::now();
                    if let Some(id) = create_numbered_session(&client, &url, n).await {
                        acknowledged.push((id, n));
                        acknowledged_at.lock().unwrap().push(sent);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                acknowledged
            })
        };
        Self { stop, task, acknowledged_at }
    }

    /// Waits until a write sent after `since` is acknowledged; returns how long after
    /// `since` the first such write was sent.
    async fn wait_progress(&self, since: Instant, what: &str) -> anyhow::Result<Duration> {
        let acknowledged_at = self.acknowledged_at.clone();
        wait_until(what, FORM, || {
            let acknowledged_at = acknowledged_at.clone();
            async move { Ok(acknowledged_at.lock().unwrap().iter().any(|at| *at > since)) }
        })
        .await?;
        let first = *self.acknowledged_at.lock().unwrap().iter().find(|at| **at > since).unwrap();
        Ok(first - since)
    }

    /// Waits until `count` writes in all were acknowledged.
    async fn wait_count(&self, count: usize) -> anyhow::Result<()> {
        let acknowledged_at = self.acknowledged_at.clone();
        wait_until("the writer has written enough", FORM, || {
            let acknowledged_at = acknowledged_at.clone();
            async move { Ok(acknowledged_at.lock().unwrap().len() >= count) }
        })
        .await
    }

    async fn finish(self) -> anyhow::Result<Vec<(String, u64)>> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

/// Checks that every acknowledged session reads back with its value.
async fn check_written(compose: &Compose, written: &[(String, u64)]) -> anyhow::Result<()> {
    assert!(written.len() > 10, "the writer wrote too little to mean anything: {}", written.len());
    for (id, n) in written {
        let session = get_served(&compose.url(&format!("/api/sessions/{id}"))).await?;
        assert_eq!(session["data"]["n"], *n, "session {id}: {session}");
    }
    println!("all {} acknowledged sessions read back", written.len());
    Ok(())
}

#[tokio::test]
#[ignore = "needs a Docker engine; scripts/test builds the images and runs this test"]
async fn compose_serves_through_nginx_scales_out_and_in_and_keeps_data_over_down_and_up(
) -> anyhow::Result<()> {
    let _engine = ENGINE.lock().await;
    engine_with_images().context(IGNORED)?;
    println!("--- one node, then a second, then up -d: the three form one cluster");
    let compose = Compose::up("shoaltest-scale", &["--scale", "shoal=1"])?;
    let waiting = Arc::new(Mutex::new(String::new()));
    let ready_url = compose.url("/api/health/ready");
    wait_until("the first node waits for its peers", FORM, || {
        let (waiting, url) = (waiting.clone(), ready_url.clone());
        async move {
            let response = http().get(&url).send().await;
            let status = response.map(|response| response.status().as_u16()).unwrap_or(0);
            *waiting.lock().unwrap() = status.to_string();
            Ok(status == 503)
        }
    })
    .await
    .with_context(|| format!("ready answered {}", waiting.lock().unwrap()))?;
    compose.run(&["up", "-d", "--scale", "shoal=2"])?;
    let cluster_url = compose.url("/api/cluster");
    wait_until("the two nodes see each other", FORM, || {
        let url = cluster_url.clone();
        async move {
            let view: Value = http().get(&url).send().await?.json().await?;
            let members = view["members"].as_array().cloned().unwrap_or_default();
            let alive = members.iter().filter(|member| member["alive"] == true).count();
            Ok(alive == 2)
        }
    })
    .await?;
    let view = cluster_view(&compose).await?;
    assert!(view["voters"].as_array().is_none_or(Vec::is_empty), "two of three formed: {view}");
    compose.run(&["up", "-d"])?;
    wait_members(&compose, 3).await?;

    println!("--- the seed guide's loop: instance ids rotate over the nodes");
    let mut instances = BTreeSet::new();
    for _ in 0..10 {
        let health: Value = http().get(compose.url("/api/health")).send().await?.json().await?;
        instances.insert(health["instance_id"].as_str().unwrap_or_default().to_string());
    }
    println!("instance ids: {instances:?}");
    assert!(instances.len() >= 2, "nginx sent every request to one node: {instances:?}");

    println!("--- through nginx: sessions on every request, a search over SSE, its report");
    let cookie = balancer::serves_like_one_node(&compose.url(""), 2, FORM).await?;

    println!("--- --scale shoal=5 while a writer runs: five voters");
    let writer = Writer::start(compose.url(""));
    compose.run(&["up", "-d", "--scale", "shoal=5"])?;
    wait_members(&compose, 5).await?;

    println!("--- --scale shoal=3: the two stopped nodes leave, three members remain");
    compose.run(&["up", "-d", "--scale", "shoal=3"])?;
    wait_members(&compose, 3).await?;
    let written = writer.finish().await?;
    check_written(&compose, &written).await?;

    println!("--- down, then up (the volume is kept): every session is back");
    compose.down(false)?;
    compose.run(&["up", "-d"])?;
    wait_members(&compose, 3).await?;
    check_written(&compose, &written).await?;
    let session = balancer::cookie_session(&http(), &compose.url(""), &cookie).await?;
    assert_eq!(session["data"]["user"], "ana", "{session}");
    Ok(())
}

#[tokio::test]
#[ignore = "needs a Docker engine; scripts/test builds the images and runs this test"]
async fn compose_survives_the_leader_killed_and_cut_off() -> anyhow::Result<()> {
    let _engine = ENGINE.lock().await;
    engine_with_images().context(IGNORED)?;
    let compose = Compose::up("shoaltest-faults", &[])?;
    wait_members(&compose, 3).await?;
    let writer = Writer::start(compose.url(""));
    writer.wait_progress(Instant::now(), "the writer writes").await?;

    println!("--- docker kill the leader: writes resume");
    let (leader, container) = leader_container(&compose).await?;
    run("docker", &["kill", &container], &[])?;
    let killed = Instant::now();
    let running = run("docker", &["inspect", "-f", "{{.State.Running}}", &container], &[])?;
    assert_eq!(running.trim(), "false", "the killed leader still runs");
    let gap = writer.wait_progress(killed, "writes resume after the leader was killed").await?;
    println!("first write acknowledged {gap:?} after the kill of leader {leader}");
    let view = cluster_view(&compose).await?;
    assert_ne!(view["leader_id"], leader, "{view}");
    println!("new leader {}", view["leader_id"]);
    // Back it comes (restart: unless-stopped may have done it already).
    if !compose.containers()?.contains(&container) {
        run("docker", &["start", &container], &[])?;
    }
    wait_members(&compose, 3).await?;

    println!("--- docker network disconnect the leader: the majority serves, it says 503");
    let (leader, container) = leader_container(&compose).await?;
    let network = compose.network();
    run("docker", &["network", "disconnect", &network, &container], &[])?;
    let cut = Instant::now();
    let gap = writer.wait_progress(cut, "writes go on without the cut-off leader").await?;
    println!("first write acknowledged {gap:?} after leader {leader} was cut off");
    let isolated = Arc::new(Mutex::new(String::new()));
    wait_until("the isolated node answers 503", FORM, || {
        let (container, isolated) = (container.clone(), isolated.clone());
        async move {
            let output =
                Command::new("docker").args(["exec", &container, "shoal", "health"]).output()?;
            let text = String::from_utf8_lossy(&output.stderr).into_owned();
            *isolated.lock().unwrap() = text.clone();
            Ok(!output.status.success() && text.contains("503"))
        }
    })
    .await
    .with_context(|| format!("last answer: {}", isolated.lock().unwrap()))?;
    println!("isolated node: {}", isolated.lock().unwrap().trim());

    println!("--- reconnect: one leader, three voters, nothing lost");
    run("docker", &["network", "connect", &network, &container], &[])?;
    wait_members(&compose, 3).await?;
    writer.wait_progress(Instant::now(), "writes go on after reconnecting").await?;
    writer.wait_count(50).await?;
    let written = writer.finish().await?;
    check_written(&compose, &written).await?;
    Ok(())
}

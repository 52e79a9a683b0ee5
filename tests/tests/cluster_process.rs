//! Multi-node clusters of real `shoal` processes on loopback: bootstrap from a peer
//! list, joins, forwarding and linearizable reads on every node (also from a leader
//! stalled past its lease), failover, catch-up by
//! snapshot, leaving, no quorum (answered within about an election timeout), and
//! acknowledged writes surviving nodes killed one at a time. (Signed internal requests
//! and strangers: `security_process.rs`.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use shoal_tests::{get_json, shoal_binary, wait_until, TestCluster};

const FORM: Duration = Duration::from_secs(40);

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn create_session(url: &str, data: Value) -> anyhow::Result<String> {
    let response =
        http().post(format!("{url}/api/sessions")).json(&json!({ "data": data })).send().await?;
    anyhow::ensure!(
        response.status() == StatusCode::CREATED,
        "create answered {}",
        response.status()
    );
    Ok(response.json::<Value>().await?["id"].as_str().unwrap().to_string())
}

/// Returns `GET url` as JSON once the node answers other than 503: while an election
/// runs (27 nodes share two cores in this suite) a node rightly says "no leader, retry".
async fn read_answered(url: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = http().get(url).timeout(Duration::from_secs(5)).send().await?;
        if response.status() != StatusCode::SERVICE_UNAVAILABLE || Instant::now() > deadline {
            return Ok(response.json().await?);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn base(cluster: &TestCluster, index: usize) -> String {
    cluster.nodes[index].url("")
}

/// A small deterministic generator for start orders and delays.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

#[tokio::test]
async fn bootstrap_forms_exactly_one_cluster_whatever_the_start_order() -> anyhow::Result<()> {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
    let mut random = Lcg(seed);
    for round in 0..10 {
        let dir = tempfile::tempdir()?;
        let ports: Vec<u16> = (0..3).map(|_| shoal_tests::free_port()).collect();
        let peers =
            ports.iter().map(|port| format!("127.0.0.1:{port}")).collect::<Vec<_>>().join(",");
        let mut order = vec![0, 1, 2];
        for i in (1..order.len()).rev() {
            order.swap(i, random.next(i as u64 + 1) as usize);
        }
        tracing::info!(round, ?order, "--- start three nodes");
        let mut nodes: BTreeMap<usize, shoal_tests::TestNode> = BTreeMap::new();
        for index in order {
            tokio::time::sleep(Duration::from_millis(random.next(400))).await;
            let mut args: Vec<&str> = shoal_tests::CLUSTER_ARGS.to_vec();
            args.extend(["--peers", &peers]);
            let node = shoal_tests::TestNode::start_on(
                ports[index],
                &dir.path().join(format!("n{index}")),
                &args,
            )?;
            nodes.insert(index, node);
        }
        let cluster = TestCluster::from_nodes(nodes.into_values().collect());
        cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
        let mut ids = Vec::new();
        for index in 0..3 {
            ids.push(cluster.node_id(index).await?);
        }
        ids.sort_unstable();
        let view = get_json(&cluster.nodes[0].url("/api/health")).await?;
        let voters: Vec<u64> = serde_json::from_value(view["cluster"]["voters"].clone())?;
        assert_eq!(voters, ids, "round {round}: one cluster of exactly the three nodes");
    }
    Ok(())
}

#[tokio::test]
async fn joins_at_runtime_and_the_autopilot_keeps_voters_odd() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = TestCluster::start(dir.path(), 3, &[])?;
    cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let id = create_session(&base(&cluster, 0), json!({"before": "join"})).await?;

    tracing::info!("--- a fourth node joins through one peer and stays a learner");
    let fourth = cluster.add_node(&[1])?;
    let fourth_id = wait_for_role(&cluster, fourth, "learner").await?;
    let session = get_json(&cluster.nodes[fourth].url(&format!("/api/sessions/{id}"))).await?;
    assert_eq!(session["data"], json!({"before": "join"}), "the learner caught up");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let view = get_json(&cluster.nodes[0].url("/api/cluster")).await?;
    assert!(
        view["learners"].as_array().unwrap().contains(&json!(fourth_id)),
        "4 voters would be even: {view}"
    );

    tracing::info!("--- a fifth node arrives: both become voters");
    let fifth = cluster.add_node(&[2])?;
    cluster.wait_converged(&[0, 1, 2, fourth, fifth], 5, FORM).await?;

    let status = std::process::Command::new(shoal_binary())
        .args(["status", "--node", &base(&cluster, fifth)])
        .output()?;
    let table = String::from_utf8(status.stdout)?;
    assert!(status.status.success(), "{table}");
    assert_eq!(table.lines().filter(|line| line.contains("alive")).count(), 5, "{table}");
    assert!(table.contains("leader") && table.contains("GOSSIP"), "{table}");
    Ok(())
}

async fn wait_for_role(cluster: &TestCluster, index: usize, role: &str) -> anyhow::Result<u64> {
    let url = cluster.nodes[0].url("/api/cluster");
    let node_id = {
        let mut found = None;
        wait_until("the new node gossips its id", FORM, || {
            let url = cluster.nodes[index].url("/api/health");
            async move { Ok(get_json(&url).await.is_ok()) }
        })
        .await?;
        found.get_or_insert(cluster.node_id(index).await?).to_owned()
    };
    wait_until(&format!("node {node_id} is a {role}"), FORM, || {
        let url = url.clone();
        async move {
            let view = get_json(&url).await?;
            let members = view["members"].as_array().cloned().unwrap_or_default();
            Ok(members
                .iter()
                .any(|member| member["node_id"] == node_id && member["raft_role"] == role))
        }
    })
    .await?;
    Ok(node_id)
}

#[tokio::test]
async fn writes_anywhere_are_read_everywhere_linearizably() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = TestCluster::start(dir.path(), 3, &[])?;
    cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let id = create_session(&base(&cluster, 1), json!({"n": 0})).await?;
    let client = http();
    let pairs = [(0, 1), (1, 2), (2, 0), (1, 0), (2, 1), (0, 2)];
    for n in 1..=1000_u64 {
        let (writer, reader) = pairs[n as usize % pairs.len()];
        let put = client
            .put(format!("{}/api/sessions/{id}", base(&cluster, writer)))
            .json(&json!({"data": {"n": n}}))
            .send()
            .await?;
        assert_eq!(put.status(), StatusCode::OK, "write {n} on node {writer}");
        let read: Value = client
            .get(format!("{}/api/sessions/{id}", base(&cluster, reader)))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(
            read["data"]["n"], n,
            "read on node {reader} after write {n} on node {writer} was stale"
        );
    }
    Ok(())
}

/// The classic failure of lease reads: a leader stalls (SIGSTOP) past its lease, the
/// others elect a new leader and take a write, and the old leader wakes up still
/// believing it leads. Its monotonic clock ran on while it was stopped, so its lease is
/// over: it must confirm with a quorum, find it was deposed, and never answer from its
/// own, stale state.
#[tokio::test]
async fn a_leader_stalled_past_its_lease_never_answers_a_stale_read() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = TestCluster::start(dir.path(), 3, &[])?;
    let mut leader = cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let id = create_session(&base(&cluster, leader), json!({"n": 0})).await?;
    let client = http();
    for round in 1..=3_u64 {
        let session = format!("/api/sessions/{id}");
        // A read on the leader just before the stall: its lease is fresh.
        let before = read_answered(&cluster.nodes[leader].url(&session)).await?;
        assert_eq!(before["data"]["n"], round - 1);

        tracing::info!(round, leader, "--- stall the leader until another one takes a write");
        cluster.nodes[leader].signal("STOP")?;
        let survivor = (leader + 1) % 3;
        let target = cluster.nodes[survivor].url(&session);
        let written = wait_until("a survivor takes a write", FORM, || {
            let request = client.put(&target).json(&json!({"data": {"n": round}})).send();
            async move { Ok(request.await?.status() == StatusCode::OK) }
        })
        .await;
        if let Err(error) = written {
            cluster.nodes[leader].signal("CONT")?;
            return Err(error);
        }

        tracing::info!(round, "--- reads sent to the old leader while it is stalled, then it runs");
        // Many, queued beside the new leader's messages: some reach its Raft core before
        // those depose it, which is when a lease that outlived the stall would answer.
        let url = cluster.nodes[leader].url(&session);
        let reads: Vec<_> = (0..32)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { read_answered(&url).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        cluster.nodes[leader].signal("CONT")?;
        for read in reads {
            let after = read.await??;
            assert_eq!(
                after["data"]["n"], round,
                "round {round}: the stalled leader answered a stale read: {after}"
            );
        }
        leader = cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    }
    Ok(())
}

#[tokio::test]
async fn failover_elects_a_new_leader_and_the_old_one_rejoins() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = TestCluster::start(dir.path(), 3, &[])?;
    let leader = cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let id = create_session(&base(&cluster, leader), json!({"kept": true})).await?;
    let survivors: Vec<usize> = (0..3).filter(|index| *index != leader).collect();

    tracing::info!(leader, "--- SIGKILL the leader");
    cluster.nodes[leader].kill();
    let killed_at = Instant::now();
    let target = base(&cluster, survivors[0]);
    wait_until("a write succeeds again", FORM, || {
        let target = target.clone();
        async move { Ok(create_session(&target, json!({})).await.is_ok()) }
    })
    .await?;
    let failover = killed_at.elapsed();
    println!(
        "failover: writes succeeded again {} ms after the leader was killed",
        failover.as_millis()
    );

    tracing::info!("--- the old leader restarts on its data and rejoins as a follower");
    cluster.nodes[leader].restart()?;
    cluster.nodes[leader].wait_ready(FORM).await?;
    let new_leader = cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    assert_ne!(new_leader, leader);
    let session = get_json(&cluster.nodes[leader].url(&format!("/api/sessions/{id}"))).await?;
    assert_eq!(session["data"], json!({"kept": true}));
    Ok(())
}

#[tokio::test]
async fn a_lagging_follower_catches_up_by_snapshot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = TestCluster::start(dir.path(), 3, &["--snapshot-logs", "50"])?;
    let leader = cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let follower = (leader + 1) % 3;
    cluster.nodes[follower].kill();
    let mut ids = Vec::new();
    for n in 0..200 {
        ids.push(create_session(&base(&cluster, leader), json!({"n": n})).await?);
    }
    let leader_view = get_json(&cluster.nodes[leader].url("/api/health")).await?;
    assert!(leader_view["cluster"]["purged_index"].as_u64().unwrap_or(0) > 0, "{leader_view}");

    let leader_applied = leader_view["cluster"]["last_applied"].as_u64();
    cluster.nodes[follower].restart()?;
    cluster.nodes[follower].wait_ready(FORM).await?;
    let url = cluster.nodes[follower].url("/api/health");
    wait_until("the follower applied everything", FORM, || {
        let url = url.clone();
        async move {
            let view = get_json(&url).await?;
            Ok(view["cluster"]["last_applied"].as_u64() >= leader_applied)
        }
    })
    .await?;
    let follower_view = get_json(&url).await?;
    assert!(follower_view["cluster"]["snapshot_index"].as_u64().is_some(), "{follower_view}");
    assert!(
        cluster.nodes[follower].log().contains("installed raft snapshot"),
        "no snapshot install"
    );
    for id in ids.iter().step_by(20) {
        let session =
            get_json(&cluster.nodes[follower].url(&format!("/api/sessions/{id}"))).await?;
        assert!(session["data"]["n"].is_u64(), "{session}");
    }
    Ok(())
}

/// A node cut off from its quorum answers 503 within about an election timeout (300 to
/// 600 ms here), not after `--request-timeout-ms` (5 s by default): load balancers move
/// on. A write already waiting when the quorum goes is answered as quickly.
#[tokio::test]
async fn without_quorum_nodes_answer_503_within_an_election_timeout_and_recover(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = TestCluster::start(dir.path(), 3, &[])?;
    let leader = cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let id = create_session(&base(&cluster, leader), json!({"v": 1})).await?;
    let followers: Vec<usize> = (0..3).filter(|index| *index != leader).collect();
    // Writes stall while the followers are stopped (SIGSTOP: their sockets stay open, so
    // nothing fails fast at the TCP level; only the missing acknowledgements tell).
    for follower in &followers {
        cluster.nodes[*follower].signal("STOP")?;
    }
    let survivor = base(&cluster, leader);
    let started = Instant::now();
    let in_flight = http().post(format!("{survivor}/api/sessions")).json(&json!({})).send().await?;
    let in_flight_took = started.elapsed();
    assert_eq!(in_flight.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        in_flight_took < Duration::from_millis(2_000),
        "a write sent as the quorum went was answered after {in_flight_took:?}"
    );
    for follower in &followers {
        cluster.nodes[*follower].kill();
    }

    let ready_url = format!("{survivor}/api/health/ready");
    wait_until("the survivor reports not ready", FORM, || {
        let url = ready_url.clone();
        async move { Ok(http().get(&url).send().await?.status() == StatusCode::SERVICE_UNAVAILABLE) }
    })
    .await?;
    let started = Instant::now();
    let write = http().post(format!("{survivor}/api/sessions")).json(&json!({})).send().await?;
    let write_took = started.elapsed();
    assert_eq!(write.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(write.headers().contains_key("retry-after"));
    let started = Instant::now();
    let read = http().get(format!("{survivor}/api/sessions/{id}")).send().await?;
    let read_took = started.elapsed();
    assert_eq!(
        read.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "no quorum, no read that could be stale"
    );
    assert!(read.headers().contains_key("retry-after"));
    for (what, took) in [("write", write_took), ("read", read_took)] {
        assert!(took < Duration::from_millis(500), "the {what} was answered 503 after {took:?}");
    }
    let first = followers[0];

    tracing::info!("--- one node comes back: service resumes");
    cluster.nodes[first].restart()?;
    cluster.wait_converged(&[leader, first], 3, FORM).await?;
    wait_until("writes succeed again", FORM, || {
        let survivor = survivor.clone();
        async move { Ok(create_session(&survivor, json!({})).await.is_ok()) }
    })
    .await?;
    let session = get_json(&format!("{survivor}/api/sessions/{id}")).await?;
    assert_eq!(session["data"], json!({"v": 1}));
    Ok(())
}

#[tokio::test]
async fn members_leave_by_request_and_dead_ones_are_removed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let admin = ["--admin-token", "admin-secret-token", "--dead-node-timeout", "2"];
    let mut cluster = TestCluster::start(dir.path(), 3, &admin)?;
    cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let fourth = cluster.add_node(&[0])?;
    let fourth_id = wait_for_role(&cluster, fourth, "learner").await?;

    tracing::info!("--- remove-node without the token is refused; with it the learner goes");
    let no_token = std::process::Command::new(shoal_binary())
        .args(["remove-node", &fourth_id.to_string(), "--node", &base(&cluster, 0)])
        .env_remove("SHOAL_ADMIN_TOKEN")
        .output()?;
    assert!(!no_token.status.success());
    let removed = std::process::Command::new(shoal_binary())
        .args([
            "remove-node",
            &fourth_id.to_string(),
            "--node",
            &base(&cluster, 1),
            "--admin-token",
            "admin-secret-token",
        ])
        .output()?;
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    cluster.nodes[fourth].kill();

    tracing::info!(
        "--- a voter dead longer than --dead-node-timeout is removed while quorum is safe"
    );
    let dead_id = cluster.node_id(2).await?;
    cluster.nodes[2].kill();
    let url = cluster.nodes[0].url("/api/cluster");
    wait_until("the dead voter is removed", FORM, || {
        let url = url.clone();
        async move {
            let view = get_json(&url).await?;
            let voters: Vec<u64> = serde_json::from_value(view["voters"].clone())?;
            Ok(voters.len() == 2 && !voters.contains(&dead_id))
        }
    })
    .await?;
    let left = http()
        .post(format!("{}/api/cluster/leave", base(&cluster, 1)))
        .bearer_auth("admin-secret-token")
        .send()
        .await?;
    assert_eq!(left.status(), StatusCode::OK, "{}", left.text().await?);
    let leaver_id = cluster.node_id(1).await?;
    let remaining = cluster.node_id(0).await?;
    let url = cluster.nodes[0].url("/api/cluster");
    wait_until("the node that left is no voter", FORM, || {
        let url = url.clone();
        async move {
            let view = get_json(&url).await?;
            let voters: Vec<u64> = serde_json::from_value(view["voters"].clone())?;
            Ok(voters == vec![remaining] && !voters.contains(&leaver_id))
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn acknowledged_writes_survive_nodes_killed_one_at_a_time() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = TestCluster::start(dir.path(), 3, &["--request-timeout-ms", "2000"])?;
    cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let urls: Vec<String> = (0..3).map(|index| base(&cluster, index)).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    tracing::info!("--- one writer per node: each keeps overwriting its own sessions");
    let writers: Vec<_> = urls
        .iter()
        .cloned()
        .enumerate()
        .map(|(writer, url)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                // id -> (last acknowledged value, last attempted value)
                let mut sessions: BTreeMap<String, (u64, u64)> = BTreeMap::new();
                let client = http();
                let mut n = 0_u64;
                let started = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < Duration::from_secs(120)
                {
                    n += 1;
                    if n % 5 == 1 {
                        if let Ok(id) = create_session(&url, json!({"w": writer, "n": n})).await {
                            sessions.insert(id, (n, n));
                        }
                        continue;
                    }
                    let Some(id) =
                        sessions.keys().nth((n as usize) % sessions.len().max(1)).cloned()
                    else {
                        continue;
                    };
                    sessions.get_mut(&id).unwrap().1 = n;
                    let put = client
                        .put(format!("{url}/api/sessions/{id}"))
                        .json(&json!({"data": {"w": writer, "n": n}}))
                        .send()
                        .await;
                    if put.is_ok_and(|response| response.status() == StatusCode::OK) {
                        sessions.get_mut(&id).unwrap().0 = n;
                    }
                }
                sessions
            })
        })
        .collect();

    for round in 0..3 {
        let victim = round % 3;
        tracing::info!(round, victim, "--- SIGKILL a node, then restart it");
        tokio::time::sleep(Duration::from_millis(800)).await;
        cluster.nodes[victim].kill();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.nodes[victim].restart()?;
        cluster.nodes[victim].wait_ready(FORM).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut written = Vec::new();
    for writer in writers {
        written.push(writer.await?);
    }
    cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;

    tracing::info!(
        "--- every acknowledged session, on every node, has its last acknowledged value"
    );
    let total: usize = written.iter().map(BTreeMap::len).sum();
    assert!(total > 20, "the writers wrote too little to mean anything: {total}");
    for sessions in &written {
        for (id, (acknowledged, attempted)) in sessions {
            for url in &urls {
                let session = read_answered(&format!("{url}/api/sessions/{id}")).await?;
                let n = session["data"]["n"].as_u64().unwrap_or(0);
                // A write whose answer was lost may still have committed: anything from
                // the last acknowledged value up to the last attempted one is correct.
                assert!(
                    (*acknowledged..=*attempted).contains(&n),
                    "{url}: session {id} holds {n}, acknowledged {acknowledged}, attempted {attempted}: {session}"
                );
            }
        }
    }
    println!("checked {total} sessions on 3 nodes");
    Ok(())
}

//! Scaling a cluster of real `shoal` processes out and in: more nodes than
//! `--bootstrap-expect` (what a peer name resolving to every replica gives) form one
//! cluster, the autopilot grows it to five voters, and with `--leave-on-shutdown` nodes
//! stopped with SIGTERM leave it (the leader among them) down to the floor of
//! `--bootstrap-expect` voters, while a writer runs and loses no acknowledged write. A
//! node at the floor keeps its membership through a stop and a restart; one that left
//! forgets its replica and joins again as a new member.

use std::time::{Duration, Instant};

use shoal_tests::{create_numbered_session, get_json, get_served, wait_until, TestCluster};

const FORM: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(30);

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn voters(url: &str) -> anyhow::Result<Vec<u64>> {
    Ok(serde_json::from_value(get_json(&format!("{url}/api/cluster")).await?["voters"].clone())?)
}

/// Waits until the node at `url` sees exactly `wanted` voters (and a leader).
async fn wait_voters(url: &str, wanted: &[u64]) -> anyhow::Result<()> {
    let mut wanted = wanted.to_vec();
    wanted.sort_unstable();
    wait_until("the voters are as expected", FORM, || {
        let (url, wanted) = (url.to_string(), wanted.clone());
        async move {
            let view = get_json(&format!("{url}/api/cluster")).await?;
            let mut voters: Vec<u64> = serde_json::from_value(view["voters"].clone())?;
            voters.sort_unstable();
            Ok(voters == wanted && !view["leader_id"].is_null())
        }
    })
    .await
}

/// The fewest acknowledged writes the writer ends with.
const MIN_WRITES: usize = 21;

/// Creates sessions through whichever of `urls` answers, until `stop` and at least
/// [`MIN_WRITES`] acknowledged (a loaded machine may serve few during the scenario);
/// returns the ids of those whose creation was acknowledged (201), with their values and
/// when each was sent.
fn spawn_writer(
    urls: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(String, u64, Instant)>> {
    tokio::spawn(async move {
        let client = http();
        let mut acknowledged = Vec::new();
        let started = Instant::now();
        let mut n = 0_u64;
        while (!stop.load(std::sync::atomic::Ordering::Relaxed) || acknowledged.len() < MIN_WRITES)
            && started.elapsed() < Duration::from_secs(240)
        {
            n += 1;
            let url = {
                let urls = urls.lock().unwrap();
                urls[(n as usize) % urls.len()].clone()
            };
            let sent = Instant::now();
            if let Some(id) = create_numbered_session(&client, &url, n).await {
                acknowledged.push((id, n, sent));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        acknowledged
    })
}

#[tokio::test]
async fn nodes_stopped_for_good_leave_down_to_the_floor_and_a_restart_keeps_membership(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let args = ["--bootstrap-expect", "3", "--leave-on-shutdown", "--request-timeout-ms", "3000"];
    let mut cluster = TestCluster::start(dir.path(), 5, &args)?;

    println!("--- five uninitialized nodes, --bootstrap-expect 3: one cluster of five voters");
    let all: Vec<usize> = (0..5).collect();
    let leader = cluster.wait_converged(&all, 5, FORM).await?;
    let mut ids = Vec::new();
    for index in 0..5 {
        ids.push(cluster.node_id(index).await?);
    }
    for index in 0..5 {
        let seen = voters(&cluster.nodes[index].url("")).await?;
        assert_eq!(seen.len(), 5, "node {index} sees {seen:?}");
    }

    let urls = std::sync::Arc::new(std::sync::Mutex::new(
        (0..5).map(|index| cluster.nodes[index].url("")).collect::<Vec<_>>(),
    ));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = spawn_writer(urls.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!("--- SIGTERM the leader and one more: both leave, five voters become three");
    let other = (0..5).find(|index| *index != leader).unwrap();
    let leaving = [leader, other];
    let staying: Vec<usize> = all.iter().copied().filter(|i| !leaving.contains(i)).collect();
    *urls.lock().unwrap() = staying.iter().map(|index| cluster.nodes[*index].url("")).collect();
    let leader_stopped = Instant::now();
    for index in leaving {
        let status = cluster.nodes[index].terminate(STOP).await?;
        assert!(status.success(), "node {index} exited with {status}");
        let log = cluster.nodes[index].log();
        assert!(log.contains("left the cluster"), "node {index} did not leave:\n{log}");
        assert!(
            !cluster.nodes[index].data_dir.join("node_id").exists(),
            "node {index} kept the replica of a node that left"
        );
    }
    let remaining: Vec<u64> = staying.iter().map(|index| ids[*index]).collect();
    wait_voters(&cluster.nodes[staying[0]].url(""), &remaining).await?;

    println!("--- SIGTERM one of the three: it stays a member (the floor), and a restart keeps it");
    let floor = staying[0];
    let status = cluster.nodes[floor].terminate(STOP).await?;
    assert!(status.success());
    assert!(cluster.nodes[floor].log().contains("stopping as a member"));
    assert!(cluster.nodes[floor].data_dir.join("node_id").exists());
    wait_voters(&cluster.nodes[staying[1]].url(""), &remaining).await?;
    cluster.nodes[floor].restart()?;
    cluster.nodes[floor].wait_ready(FORM).await?;
    assert_eq!(cluster.node_id(floor).await?, ids[floor], "the restarted node is the same member");
    cluster.wait_converged(&staying, 3, FORM).await?;

    println!("--- a node that left starts again on its data dir: it joins as a new member");
    let back = leaving[1];
    cluster.nodes[back].restart()?;
    let new_id = cluster.nodes[back].wait_node_id(FORM).await?;
    assert_ne!(new_id, ids[back], "a node that left comes back under a new id");
    let url = cluster.nodes[staying[1]].url("/api/cluster");
    wait_until("the returning node is a member again", FORM, || {
        let url = url.clone();
        async move {
            let view = get_json(&url).await?;
            let members = view["members"].as_array().cloned().unwrap_or_default();
            Ok(members.iter().any(|member| member["node_id"] == new_id))
        }
    })
    .await?;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = writer.await?;
    assert!(
        acknowledged.len() >= MIN_WRITES,
        "the writer wrote too little: {}",
        acknowledged.len()
    );
    // The leader commits its own removal and steps down; the others elect one of them.
    let mut around: Vec<Instant> = acknowledged
        .iter()
        .map(|(_, _, sent)| *sent)
        .filter(|sent| *sent >= leader_stopped && *sent - leader_stopped < Duration::from_secs(5))
        .collect();
    around.insert(0, leader_stopped);
    let pause = around.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap_or_default();
    println!("longest pause in acknowledged writes while the leader left: {pause:?}");
    println!("--- every acknowledged session reads back from every remaining voter");
    for index in &staying {
        let url = cluster.nodes[*index].url("");
        for (id, n, _) in &acknowledged {
            let session = get_served(&format!("{url}/api/sessions/{id}")).await?;
            assert_eq!(session["data"]["n"], *n, "node {index}: session {id}: {session}");
        }
    }
    println!("checked {} acknowledged sessions on 3 nodes", acknowledged.len());
    Ok(())
}

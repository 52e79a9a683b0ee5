//! A damaged replica never starts on what it has, says which file and what to do, and
//! is rebuilt from the cluster: `shoal reset-replica`, then a start as before, and it is
//! back as a voter under a new id, with every acknowledged write.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use shoal_tests::{get_json, shoal_binary, wait_until, TestCluster};

const FORM: Duration = Duration::from_secs(40);

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// Returns the segment files of a node's Raft log, largest first.
fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("raft-log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort_by_key(|path| std::cmp::Reverse(std::fs::metadata(path).unwrap().len()));
    files
}

fn health_ids(health: &Value, role: &str) -> Vec<u64> {
    health["cluster"][role].as_array().into_iter().flatten().filter_map(Value::as_u64).collect()
}

#[tokio::test]
async fn a_damaged_replica_is_refused_then_rebuilt_from_the_cluster() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = TestCluster::start(dir.path(), 3, &["--snapshot-logs", "40"])?;
    let leader = cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let mut ids = Vec::new();
    for n in 0..120 {
        let created = http()
            .post(cluster.nodes[leader].url("/api/sessions"))
            .json(&json!({ "data": { "n": n } }))
            .send()
            .await?;
        assert_eq!(created.status(), StatusCode::CREATED);
        ids.push(created.json::<Value>().await?["id"].as_str().unwrap().to_string());
    }
    let follower = (leader + 1) % 3;
    let old_id = cluster.node_id(follower).await?;
    // Everything acknowledged has reached the follower's log.
    let applied_url = cluster.nodes[follower].url(&format!("/api/sessions/{}", ids[119]));
    wait_until("the follower has the last write", FORM, || {
        let url = applied_url.clone();
        async move { Ok(http().get(&url).send().await?.status() == StatusCode::OK) }
    })
    .await?;
    cluster.nodes[follower].kill();

    tracing::info!("--- one byte of an acknowledged record flipped: the node refuses to start");
    let data_dir = cluster.nodes[follower].data_dir.clone();
    let segment = segments(&data_dir).remove(0);
    let mut bytes = std::fs::read(&segment)?;
    // Inside the first record's payload (after the 28-byte header and its 16-byte frame).
    bytes[28 + 16 + 2] ^= 0x5a;
    std::fs::write(&segment, &bytes)?;
    let output = std::process::Command::new(shoal_binary())
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .args(["--peers", "127.0.0.1:1", "--cluster-secret", shoal_tests::TEST_SECRET])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started on a damaged log: {stderr}");
    let file_name = segment.file_name().unwrap().to_string_lossy().into_owned();
    let remedy = format!("shoal reset-replica --data-dir {}", data_dir.display());
    assert!(stderr.contains("raft log damaged") && stderr.contains(&file_name), "{stderr}");
    assert!(stderr.contains(&remedy), "the message says what to do: {stderr}");
    assert_eq!(std::fs::read(&segment)?, bytes, "refusing changed the damaged file");

    tracing::info!(
        "--- shoal reset-replica moves the replica aside; the node rejoins under a new id"
    );
    let reset = std::process::Command::new(shoal_binary())
        .args(["reset-replica", "--data-dir"])
        .arg(&data_dir)
        .output()?;
    let said = String::from_utf8_lossy(&reset.stdout);
    assert!(reset.status.success(), "{said}{}", String::from_utf8_lossy(&reset.stderr));
    assert!(said.contains(&format!("node {old_id}")), "{said}");
    let kept: Vec<_> = std::fs::read_dir(&data_dir)?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "the old replica is kept aside, not deleted");
    cluster.nodes[follower].restart()?;

    let leader_url = cluster.nodes[leader].url("/api/health");
    let new_id = cluster.nodes[follower].wait_node_id(FORM).await?;
    assert_ne!(new_id, old_id);
    wait_until("the rebuilt node is a voter in place of the old one", FORM, || {
        let url = leader_url.clone();
        async move {
            let health = get_json(&url).await?;
            let voters = health_ids(&health, "voters");
            let learners = health_ids(&health, "learners");
            Ok(voters.len() == 3
                && voters.contains(&new_id)
                && !voters.contains(&old_id)
                && !learners.contains(&old_id))
        }
    })
    .await?;
    let log = cluster.nodes[follower].log();
    assert!(log.contains("installed raft snapshot"), "the rebuilt node caught up by snapshot");
    for id in &ids {
        let read = get_json(&cluster.nodes[follower].url(&format!("/api/sessions/{id}"))).await?;
        assert!(read["data"]["n"].is_u64(), "session {id} on the rebuilt node: {read}");
    }
    wait_until("the rebuilt node forgets the member it replaced", FORM, || {
        let marker = data_dir.join("replaces_node");
        async move { Ok(!marker.exists()) }
    })
    .await?;
    Ok(())
}

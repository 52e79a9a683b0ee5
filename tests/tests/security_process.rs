//! The defences of docs/threat-model.md against someone on the network who does not hold
//! the cluster secret, each first shown to let the genuine case through: internal
//! requests refused from their head unless signed for this node, fresh and new; strangers
//! that gossip never seen, never members, never making a member look dead; a stranger on
//! a peer address never a founding voter; a replayed or repeated forwarded write applied
//! once.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shoal_raft::auth::{body_digest, RequestHead};
use shoal_raft::network::answer_signature;
use shoal_raft::{ClusterSecret, Command, Response, SessionChange};
use shoal_storage::codec;
use shoal_tests::{
    free_port, get_json, wait_until, TestCluster, TestNode, CLUSTER_ARGS, TEST_SECRET,
};

const FORM: Duration = Duration::from_secs(40);
const READ_INDEX: &str = "/internal/raft/read-index";
const FORWARD: &str = "/internal/raft/forward";

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

fn secret() -> ClusterSecret {
    ClusterSecret::new(TEST_SECRET.as_bytes().to_vec())
}

/// A request to `path` on `node` carrying `head`'s headers, as signed by `signer`.
fn request_with(
    node: &TestNode,
    head: &RequestHead,
    signer: &ClusterSecret,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let method = Method::from_bytes(head.method.as_bytes()).unwrap();
    let mut request = http().request(method, node.url(&head.path_and_query));
    for (name, value) in head.headers(signer) {
        request = request.header(name, value);
    }
    request.body(body)
}

/// Returns the answer's status once its signature is checked against `head`.
async fn verified_status(response: reqwest::Response, head: &RequestHead) -> anyhow::Result<u16> {
    let status = response.status().as_u16();
    let signature = answer_signature(&response);
    let body = response.bytes().await?;
    secret().verify_response(head.nonce, status, &body_digest(&body), signature.as_deref())?;
    Ok(status)
}

/// Sends a request head by hand and returns the status line of the answer, which must
/// come although the body never does: proof that the node decided from the head.
fn answer_to_head_alone(port: u16, head: &str) -> anyhow::Result<String> {
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port))?;
    socket.set_read_timeout(Some(Duration::from_secs(3)))?;
    socket.write_all(head.as_bytes())?;
    let mut answer = vec![0; 1024];
    let read = socket.read(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    Ok(answer.lines().next().unwrap_or_default().to_string())
}

/// Checks that `/api/health` answers within 100 ms. Up to three tries: on a machine
/// shared by a dozen test nodes one request may wait for a core, while a node that the
/// abuse blocks would miss every time.
async fn health_within_100ms(node: &TestNode) -> anyhow::Result<()> {
    let mut took = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let health = http().get(node.url("/api/health")).send().await?;
        took.push(started.elapsed());
        anyhow::ensure!(health.status() == StatusCode::OK, "health answered {}", health.status());
        if took.last().is_some_and(|took| *took < Duration::from_millis(100)) {
            return Ok(());
        }
    }
    anyhow::bail!("health took {took:?}")
}

#[tokio::test]
async fn internal_requests_are_refused_from_their_head_unless_signed_fresh_new_and_for_this_node(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = TestCluster::start(dir.path(), 3, &[])?;
    cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let node = &cluster.nodes[0];
    let (me, other) = (cluster.node_id(0).await?, cluster.node_id(1).await?);
    let body = codec::encode(&());
    let secret = secret();

    tracing::info!("--- signed for this node, fresh and new: answered, and the answer is signed");
    let head = RequestHead::new("POST", READ_INDEX, me, &body);
    let answer = request_with(node, &head, &secret, body.clone()).send().await?;
    assert_eq!(verified_status(answer, &head).await?, 200);

    tracing::info!("--- the same request again (a replay) is refused");
    let replayed = request_with(node, &head, &secret, body.clone()).send().await?;
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED, "replay");

    tracing::info!("--- unsigned, forged, stale, for another node, or with another body");
    let unsigned = http().post(node.url(READ_INDEX)).body(body.clone()).send().await?;
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED, "unsigned");
    let stranger = ClusterSecret::new(b"not-the-cluster-secret".to_vec());
    let forged = RequestHead::new("POST", READ_INDEX, me, &body);
    let status = request_with(node, &forged, &stranger, body.clone()).send().await?.status();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "signed with another secret");
    let mut stale = RequestHead::new("POST", READ_INDEX, me, &body);
    stale.timestamp_ms -= 120_000;
    let status = request_with(node, &stale, &secret, body.clone()).send().await?.status();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "stale");
    let elsewhere = RequestHead::new("POST", READ_INDEX, other, &body);
    let status = request_with(node, &elsewhere, &secret, body.clone()).send().await?.status();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "signed for node {other}, sent to node {me}");
    let swapped = RequestHead::new("POST", READ_INDEX, me, &[9]);
    let status = request_with(node, &swapped, &secret, body.clone()).send().await?.status();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a body other than the signed one");

    tracing::info!("--- a 250 MiB body is refused from the head, unsigned or signed");
    let declared = 250 * 1024 * 1024_u64;
    let unsigned_head = format!(
        "POST /internal/raft/append HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n"
    );
    assert_eq!(answer_to_head_alone(node.port, &unsigned_head)?, "HTTP/1.1 401 Unauthorized");
    let mut big = RequestHead::new("POST", "/internal/raft/vote", me, &[]);
    big.content_length = declared;
    let mut signed_head =
        format!("POST /internal/raft/vote HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n");
    for (name, value) in big.headers(&secret) {
        signed_head.push_str(&format!("{name}: {value}\r\n"));
    }
    signed_head.push_str("\r\n");
    assert_eq!(answer_to_head_alone(node.port, &signed_head)?, "HTTP/1.1 413 Payload Too Large");

    tracing::info!("--- each endpoint has its own limit: 200 KiB is too much for a vote only");
    let bulky = vec![7_u8; 200 * 1024];
    for (path, expected) in [("/internal/raft/vote", 413), ("/internal/raft/forward-batch", 400)] {
        let head = RequestHead::new("POST", path, me, &bulky);
        let status = request_with(node, &head, &secret, bulky.clone()).send().await?.status();
        assert_eq!(status.as_u16(), expected, "{path}: within its limit, the body is decoded");
    }

    tracing::info!(
        "--- four unsigned 250 MiB uploads at once: refused, and the node does not grow"
    );
    let before = node.rss_kib()?;
    let uploads: Vec<_> = (0..4)
        .map(|_| {
            let (port, head) = (node.port, unsigned_head.clone());
            std::thread::spawn(move || -> u64 {
                let Ok(mut socket) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    return 0;
                };
                let _ = socket.set_write_timeout(Some(Duration::from_secs(5)));
                let _ = socket.write_all(head.as_bytes());
                let chunk = vec![b'x'; 1024 * 1024];
                let mut sent = 0;
                // The node answers and closes: the upload breaks long before 250 MiB.
                while sent < 250 && socket.write_all(&chunk).is_ok() {
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let sent: Vec<u64> = uploads.into_iter().map(|upload| upload.join().unwrap()).collect();
    let grown_mib = node.rss_kib()?.saturating_sub(before) / 1024;
    assert!(sent.iter().all(|mib| *mib < 250), "some upload was read whole: {sent:?} MiB");
    assert!(grown_mib < 32, "the node grew by {grown_mib} MiB");
    health_within_100ms(node).await?;
    let metrics = http().get(node.url("/metrics")).send().await?.text().await?;
    for reason in ["unsigned", "forged", "stale", "wrong_target", "replayed", "body_mismatch"] {
        let line = format!("shoal_internal_requests_refused_total{{reason=\"{reason}\"}}");
        assert!(metrics.contains(&line), "/metrics lacks {line}");
    }
    Ok(())
}

/// Returns the node ids and liveness `/api/cluster` shows on `node`.
async fn cluster_view(node: &TestNode) -> anyhow::Result<Vec<(u64, bool, String)>> {
    let view = get_json(&node.url("/api/cluster")).await?;
    let members = view["members"].as_array().cloned().unwrap_or_default();
    Ok(members
        .iter()
        .map(|member| {
            (
                member["node_id"].as_u64().unwrap_or(0),
                member["alive"].as_bool().unwrap_or(false),
                member["raft_role"].as_str().or(member["role"].as_str()).unwrap_or("").to_string(),
            )
        })
        .collect())
}

#[tokio::test]
async fn strangers_that_gossip_never_join_nor_make_a_member_look_dead() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A dead member would be removed after 2 s: a stranger that made one look dead would
    // get it thrown out of the cluster within the test.
    let mut cluster = TestCluster::start(dir.path(), 3, &["--dead-node-timeout", "2"])?;
    let leader = cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let voters: Vec<u64> =
        vec![cluster.node_id(0).await?, cluster.node_id(1).await?, cluster.node_id(2).await?];
    let term =
        get_json(&cluster.nodes[leader].url("/api/health")).await?["cluster"]["term"].clone();

    tracing::info!(
        "--- a newcomer with the secret gossips and is added: the path strangers would take"
    );
    let mut acknowledged = Vec::new();
    for n in 0..10 {
        let created = http()
            .post(cluster.nodes[leader].url("/api/sessions"))
            .json(&json!({ "data": { "n": n } }))
            .send()
            .await?;
        assert_eq!(created.status(), StatusCode::CREATED);
        acknowledged.push(created.json::<Value>().await?["id"].as_str().unwrap().to_string());
    }
    let newcomer = cluster.add_node(&[0])?;
    let newcomer_id = cluster.nodes[newcomer].wait_node_id(FORM).await?;
    let leader_url = cluster.nodes[leader].url("/api/health");
    wait_until("the newcomer is a member", FORM, || {
        let url = leader_url.clone();
        async move {
            let health = get_json(&url).await?;
            let in_cluster = |role: &str| {
                health["cluster"][role]
                    .as_array()
                    .is_some_and(|ids| ids.contains(&json!(newcomer_id)))
            };
            Ok(in_cluster("learners") || in_cluster("voters"))
        }
    })
    .await?;

    tracing::info!(
        "--- strangers: one with a new id, one claiming a voter's id at another address"
    );
    let peers = cluster
        .nodes
        .iter()
        .map(|node| format!("127.0.0.1:{}", node.port))
        .collect::<Vec<_>>()
        .join(",");
    let stranger_args = |node_id: u64| -> Vec<String> {
        let mut args: Vec<String> = CLUSTER_ARGS.iter().map(|arg| arg.to_string()).collect();
        let secret_at = args.iter().position(|arg| arg == TEST_SECRET).unwrap();
        args[secret_at] = "a-stranger-guessing-the-secret".to_string();
        args.extend(["--peers".into(), peers.clone(), "--node-id".into(), node_id.to_string()]);
        args
    };
    let mut strangers = Vec::new();
    for (name, node_id) in [("stranger", 990_001), ("impostor", voters[(leader + 1) % 3])] {
        let args = stranger_args(node_id);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        strangers.push(TestNode::start(&dir.path().join(name), &args)?);
    }
    // Several failure-detection and dead-node-timeout periods for an effect to show.
    let watch_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < watch_until {
        for node in cluster.nodes.iter().take(3) {
            for (node_id, alive, _) in cluster_view(node).await? {
                assert_ne!(node_id, 990_001, "the stranger shows in /api/cluster");
                if voters.contains(&node_id) {
                    assert!(alive, "voter {node_id} looks dead on port {}", node.port);
                }
            }
        }
        let health = get_json(&leader_url).await?;
        let members: Vec<u64> = ["voters", "learners"]
            .iter()
            .flat_map(|role| health["cluster"][role].as_array().cloned().unwrap_or_default())
            .filter_map(|id| id.as_u64())
            .collect();
        for voter in &voters {
            assert!(members.contains(voter), "voter {voter} was removed: {members:?}");
        }
        assert!(!members.contains(&990_001), "the stranger became a member: {members:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let health = get_json(&leader_url).await?;
    assert_eq!(health["cluster"]["term"], term, "the term moved: an election ran");
    for stranger in &strangers {
        let health = get_json(&stranger.url("/api/health")).await?;
        assert!(
            health["cluster"]["voters"].as_array().is_none_or(Vec::is_empty),
            "a stranger formed or joined a cluster: {health}"
        );
    }
    for node in cluster.nodes.iter().take(3) {
        health_within_100ms(node).await?;
        for id in &acknowledged {
            let read = get_json(&node.url(&format!("/api/sessions/{id}"))).await?;
            assert!(read["data"]["n"].is_u64(), "session {id} lost: {read}");
        }
    }
    let metrics = http().get(cluster.nodes[leader].url("/metrics")).send().await?.text().await?;
    let dropped = metrics
        .lines()
        .find(|line| line.starts_with("shoal_gossip_datagrams_dropped_total{reason=\"forged\"}"))
        .and_then(|line| line.split_whitespace().last())
        .and_then(|count| count.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(dropped > 0.0, "no forged gossip datagram counted:\n{metrics}");
    Ok(())
}

#[tokio::test]
async fn a_stranger_on_a_peer_address_never_becomes_a_founding_voter() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ports = [free_port(), free_port(), free_port()];
    let peers = ports.map(|port| format!("127.0.0.1:{port}")).join(",");
    let start = |index: usize, secret: &str| -> anyhow::Result<TestNode> {
        let mut args: Vec<String> = CLUSTER_ARGS.iter().map(|arg| arg.to_string()).collect();
        let secret_at = args.iter().position(|arg| arg == TEST_SECRET).unwrap();
        args[secret_at] = secret.to_string();
        args.extend(["--peers".into(), peers.clone()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TestNode::start_on(ports[index], &dir.path().join(format!("n{index}-{secret}")), &args)
    };
    let mut nodes = vec![start(0, TEST_SECRET)?, start(1, TEST_SECRET)?];
    let mut stranger = start(2, "a-stranger-guessing-the-secret")?;

    tracing::info!("--- with a stranger as the third peer, nobody bootstraps");
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        for node in nodes.iter().chain([&stranger]) {
            let health = get_json(&node.url("/api/health")).await?;
            assert!(
                health["cluster"]["voters"].as_array().is_none_or(Vec::is_empty),
                "a cluster formed with a stranger around: {health}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    tracing::info!("--- the genuine third node takes its place: one cluster of the three forms");
    stranger.kill();
    drop(stranger);
    nodes.push(start(2, TEST_SECRET)?);
    let cluster = TestCluster::from_nodes(nodes);
    cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    Ok(())
}

/// The body of a forwarded write and the answer the leader gives it.
fn forward_body(command: &Command) -> Vec<u8> {
    codec::encode(command)
}

async fn forwarded(
    node: &TestNode,
    head: &RequestHead,
    body: Vec<u8>,
) -> anyhow::Result<(StatusCode, Option<shoal_raft::Result<Response>>)> {
    let response = request_with(node, head, &secret(), body).send().await?;
    let status = response.status();
    let bytes = response.bytes().await?;
    let answer = (status == StatusCode::OK).then(|| codec::decode(&bytes, "answer")).transpose()?;
    Ok((status, answer))
}

fn replace_with(id: &str, data: Value, key: u128) -> Command {
    let deadline_ms = shoal_raft::unix_millis() + 60_000;
    let update = Command::UpdateSession {
        id: id.to_string(),
        change: SessionChange::Replace(data.to_string()),
        if_version: None,
        max_data_bytes: 65_536,
    };
    Command::Once { key, deadline_ms, command: Box::new(update) }
}

fn version_of(answer: &Option<shoal_raft::Result<Response>>) -> Option<u64> {
    match answer {
        Some(Ok(Response::Session { record, .. })) => Some(record.version),
        _ => None,
    }
}

#[tokio::test]
async fn a_replayed_or_repeated_forwarded_write_applies_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = TestCluster::start(dir.path(), 3, &[])?;
    let leader = cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let leader_node = &cluster.nodes[leader];
    let leader_id = cluster.node_id(leader).await?;
    let created = http()
        .post(leader_node.url("/api/sessions"))
        .json(&json!({ "data": { "v": "created" } }))
        .send()
        .await?;
    let id = created.json::<Value>().await?["id"].as_str().unwrap().to_string();
    let session = |node: &TestNode| {
        let url = node.url(&format!("/api/sessions/{id}"));
        async move { get_json(&url).await }
    };

    tracing::info!("--- a member's forwarded write applies: version 2");
    let first = replace_with(&id, json!({ "v": "forwarded" }), 41);
    let head = RequestHead::new("POST", FORWARD, leader_id, &forward_body(&first));
    let (status, answer) = forwarded(leader_node, &head, forward_body(&first)).await?;
    assert_eq!((status, version_of(&answer)), (StatusCode::OK, Some(2)));

    tracing::info!(
        "--- the same write sent again by a member (new nonce, same key): the first answer"
    );
    let again = RequestHead::new("POST", FORWARD, leader_id, &forward_body(&first));
    let (status, answer) = forwarded(leader_node, &again, forward_body(&first)).await?;
    assert_eq!((status, version_of(&answer)), (StatusCode::OK, Some(2)), "{answer:?}");

    tracing::info!("--- a client's later write: version 3");
    let later = http()
        .put(leader_node.url(&format!("/api/sessions/{id}")))
        .json(&json!({ "data": { "v": "later" } }))
        .send()
        .await?;
    assert_eq!(later.status(), StatusCode::OK);

    tracing::info!("--- the forwarded write replayed byte for byte: refused");
    let (status, _) = forwarded(leader_node, &head, forward_body(&first)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    tracing::info!("--- sent again after the later write: applies nowhere, answers 'unknown'");
    let late = RequestHead::new("POST", FORWARD, leader_id, &forward_body(&first));
    let (status, answer) = forwarded(leader_node, &late, forward_body(&first)).await?;
    let unknown = matches!(
        answer,
        Some(Err(shoal_raft::ClusterError::Rejected(shoal_raft::Rejection::RequestExpired)))
    );
    assert!(status == StatusCode::OK && unknown, "{status} {answer:?}");
    for node in &cluster.nodes {
        let read = session(node).await?;
        assert_eq!(
            (read["data"]["v"].as_str(), read["version"].as_u64()),
            (Some("later"), Some(3))
        );
    }

    tracing::info!("--- a new write (another key) does apply: the path works");
    let second = replace_with(&id, json!({ "v": "second" }), 42);
    let head = RequestHead::new("POST", FORWARD, leader_id, &forward_body(&second));
    let (status, answer) = forwarded(leader_node, &head, forward_body(&second)).await?;
    assert_eq!((status, version_of(&answer)), (StatusCode::OK, Some(4)));
    Ok(())
}

//! What systemd and container health checks see of a real `shoal` process: the
//! notify-socket protocol of `Type=notify` (READY=1 only once the node can serve,
//! STOPPING=1 when it begins to stop), `shoal health` exiting 0 or 1, and a SIGTERM that
//! arrives while the node is still starting.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use shoal_tests::{free_port, get_json, shoal_binary, TestNode, CLUSTER_ARGS};

const READY: Duration = Duration::from_secs(30);

/// Receives the next datagram on `socket` within `deadline`, as text.
fn receive(socket: &UnixDatagram, deadline: Duration) -> Option<String> {
    socket.set_read_timeout(Some(deadline)).unwrap();
    let mut buffer = [0_u8; 4096];
    let length = socket.recv(&mut buffer).ok()?;
    Some(String::from_utf8_lossy(&buffer[..length]).into_owned())
}

/// Runs `shoal health` against `node` and returns its exit code and output.
fn health(node: &str) -> (i32, String) {
    let output = Command::new(shoal_binary())
        .args(["health", "--node", node, "--timeout-ms", "2000"])
        .env_remove("SHOAL_NODE")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn systemd_hears_ready_once_the_node_serves_and_stopping_when_it_stops() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path)?;
    let envs = vec![("NOTIFY_SOCKET".to_string(), socket_path.display().to_string())];
    let mut node = TestNode::start_with(free_port(), &dir.path().join("n0"), &[], &envs)?;

    let started = Instant::now();
    let message = receive(&socket, READY).expect("no notification within the deadline");
    assert!(message.lines().any(|line| line == "READY=1"), "{message:?}");
    // Ready means ready: the load balancer's check agrees at that moment.
    let ready = reqwest::get(node.url("/api/health/ready")).await?;
    assert_eq!(ready.status(), 200, "READY=1 came before the node could serve");
    println!("READY=1 after {:?}: {message:?}", started.elapsed());
    let (code, text) = health(&node.url(""));
    assert_eq!(code, 0, "shoal health on a ready node: {text}");

    node.signal("TERM")?;
    let message = receive(&socket, READY).expect("no STOPPING=1 after SIGTERM");
    assert!(message.lines().any(|line| line == "STOPPING=1"), "{message:?}");
    node.terminate(READY).await.ok();
    let (code, text) = health(&node.url(""));
    assert_eq!(code, 1, "shoal health on a stopped node: {text}");
    assert!(text.contains("cannot reach"), "{text}");
    Ok(())
}

#[tokio::test]
async fn a_node_that_cannot_serve_yet_is_not_ready_to_systemd_or_health() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path)?;
    let envs = vec![("NOTIFY_SOCKET".to_string(), socket_path.display().to_string())];
    // It waits for a second node that never comes: no cluster, no leader.
    let absent = format!("127.0.0.1:{}", free_port());
    let mut args: Vec<&str> = CLUSTER_ARGS.to_vec();
    args.extend(["--peers", &absent]);
    let node = TestNode::start_with(free_port(), &dir.path().join("n0"), &args, &envs)?;
    node.wait_node_id(READY).await?;
    assert_eq!(
        get_json(&node.url("/api/health")).await?["cluster"]["leader_id"],
        serde_json::Value::Null
    );

    let (code, text) = health(&node.url(""));
    assert_eq!(code, 1, "shoal health on a node without a cluster: {text}");
    assert!(text.contains("not ready") && text.contains("503"), "{text}");
    // Within a few gossip rounds it would have said READY=1 had it been ready.
    assert_eq!(receive(&socket, Duration::from_secs(2)), None);
    Ok(())
}

#[tokio::test]
async fn a_node_stopped_while_it_starts_exits_at_once_and_cleanly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A peer name that never resolves: the node waits for it at start (up to 10 s).
    let mut args: Vec<&str> = CLUSTER_ARGS.to_vec();
    args.extend(["--peers", "no-such-peer.invalid:8000"]);
    let mut node = TestNode::start_with(free_port(), &dir.path().join("n0"), &args, &[])?;
    let deadline = Instant::now() + READY;
    while !node.log().contains("open-file limit") {
        assert!(Instant::now() < deadline, "the node did not begin to start:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = Instant::now();
    // Without a handler yet, SIGTERM would kill it (and, as PID 1 in a container, be
    // ignored until the stop timeout); with one it stops by itself, exit code 0.
    let status = node.terminate(Duration::from_secs(5)).await?;
    assert!(status.success(), "{status}:\n{}", node.log());
    assert!(node.log().contains("stopped while starting"), "{}", node.log());
    println!("exited {:?} after SIGTERM", stopped.elapsed());
    Ok(())
}

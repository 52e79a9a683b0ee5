//! The client subcommands, `shoal status` and `shoal remove-node`, and
//! `shoal reset-replica`.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("the HTTP client builds")
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Renders `/api/cluster` as a table.
pub fn render_status(cluster: &Value) -> String {
    let header = ["NODE", "INSTANCE", "ADDRESS", "GOSSIP", "RAFT", "APPLIED"];
    let mut rows: Vec<[String; 6]> = vec![header.map(str::to_string)];
    for member in cluster["members"].as_array().into_iter().flatten() {
        rows.push([
            cell(&member["node_id"]),
            cell(&member["instance_id"]),
            cell(&member["addr"]),
            cell(&member["gossip"]),
            cell(&member["raft_role"]),
            cell(&member["applied_index"]),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|col| rows.iter().map(|row| row[col].len()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "leader: {}  term: {}  commit: {}  (as seen by node {})\n",
        cell(&cluster["leader_id"]),
        cell(&cluster["term"]),
        cell(&cluster["commit_index"]),
        cell(&cluster["node_id"])
    );
    for row in rows {
        let line: Vec<String> =
            row.iter().zip(&widths).map(|(text, width)| format!("{text:<width$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `shoal status`: prints the cluster as `node` sees it.
pub async fn status(node: &str) -> anyhow::Result<String> {
    let url = format!("{}/api/cluster", node.trim_end_matches('/'));
    let response =
        client().get(&url).send().await.with_context(|| format!("cannot reach {url}"))?;
    if !response.status().is_success() {
        bail!("{url} answered {}", response.status());
    }
    Ok(render_status(&response.json().await?))
}

/// `shoal health`: succeeds when `node` can serve reads and writes.
pub async fn health(node: &str, timeout: Duration) -> anyhow::Result<String> {
    let url = format!("{}/api/health/ready", node.trim_end_matches('/'));
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    let response = client.get(&url).send().await.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("not ready: {url} answered {status}: {}", cell(&body["message"]));
    }
    Ok(format!("ready: node {}", cell(&body["node_id"])))
}

/// The URL of the node of this machine or container, from the node's own settings
/// (SHOAL_LISTEN, else PORT, else port 8000; 127.0.0.1 for an unspecified IP).
pub fn local_node_url() -> String {
    let listen = std::env::var("SHOAL_LISTEN")
        .ok()
        .and_then(|listen| listen.parse::<std::net::SocketAddr>().ok());
    let port = std::env::var("PORT").ok().and_then(|port| port.parse().ok()).unwrap_or(8000);
    match listen {
        Some(addr) if !addr.ip().is_unspecified() => format!("http://{addr}"),
        Some(addr) => format!("http://127.0.0.1:{}", addr.port()),
        None => format!("http://127.0.0.1:{port}"),
    }
}

/// `shoal remove-node`: removes member `node_id` through `node`.
pub async fn remove_node(
    node: &str,
    node_id: u64,
    admin_token: Option<&str>,
) -> anyhow::Result<String> {
    let url = format!("{}/api/cluster/members/{node_id}", node.trim_end_matches('/'));
    let mut request = client().delete(&url);
    if let Some(token) = admin_token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{url} answered {status}: {}", cell(&body["message"]));
    }
    Ok(format!("removed node {node_id}"))
}

/// Moves the replica in `data_dir` aside (see `data_dir::reset_replica`) and says what
/// happens next.
pub fn reset_replica(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let reset = crate::data_dir::reset_replica(data_dir)?;
    Ok(format!(
        "moved {} of node {} into {}\n\
         Start the node again as before (same --peers, no --node-id of the old member): it \
         joins its cluster under a new id, catches up by snapshot, and the leader puts it in \
         place of node {} once it has caught up. Delete {} when you no longer need it.",
        reset.moved.join(", "),
        reset.old_node_id,
        reset.moved_to.display(),
        reset.old_node_id,
        reset.moved_to.display(),
    ))
}

//! The fault suite (docs/robustness.md): a 3-node cluster, clients reading, writing and
//! compare-and-setting session registers on random nodes, faults from a seeded
//! schedule, then healing, and the recorded history checked for linearizability
//! (acknowledged writes never lost, no stale or invented reads, every node serving
//! again).
//!
//! Each test prints its seed; `SHOAL_ROBUSTNESS_SEED=<seed>` replays the schedule and
//! `SHOAL_ROBUSTNESS_SECS` sets the traffic time (`scripts/robustness` runs them long).
//! The tests that need root (network namespaces) or libfaketime are ignored by a plain
//! `cargo test`; `scripts/test` installs what they need and runs them.

use shoal_tests::nemesis::{Churn, ClockSkew, Kill, Nemesis, Partition, Pause, Stranger};
use shoal_tests::robustness::{run, Run};
use shoal_tests::system::Network;
use shoal_tests::workload::Workload;

fn loopback(name: &'static str, nemeses: Vec<Box<dyn Nemesis>>, max_active: usize) -> Run {
    Run { name, network: Network::Loopback, nemeses, max_active, workload: Workload::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills() -> anyhow::Result<()> {
    run(loopback("kill", vec![Box::new(Kill::default())], 1)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses() -> anyhow::Result<()> {
    run(loopback("pause", vec![Box::new(Pause::default())], 1)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_churn() -> anyhow::Result<()> {
    run(loopback("churn", vec![Box::new(Churn::default())], 1)).await?;
    Ok(())
}

/// The attacks of docs/threat-model.md (an impostor gossiping as a member, forged and
/// replayed internal requests, oversized bodies, silent connections), with leaders
/// paused meanwhile: nothing a stranger sends changes the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers() -> anyhow::Result<()> {
    let nemeses: Vec<Box<dyn Nemesis>> =
        vec![Box::new(Stranger::default()), Box::new(Pause::default())];
    run(loopback("stranger", nemeses, 2)).await?;
    Ok(())
}

/// A node's clocks at twice or half the real rate, with leaders paused meanwhile so
/// that leadership moves onto and off the skewed node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs libfaketime (Debian's faketime); scripts/test installs it and runs this"]
async fn clock_skew() -> anyhow::Result<()> {
    let nemeses: Vec<Box<dyn Nemesis>> =
        vec![Box::new(ClockSkew::new()?), Box::new(Pause::default())];
    run(loopback("clock-skew", nemeses, 2)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, iproute2 and iptables (network namespaces); scripts/test runs this"]
async fn partitions() -> anyhow::Result<()> {
    let nemeses: Vec<Box<dyn Nemesis>> = vec![Box::new(Partition::default())];
    let workload = Workload::default();
    run(Run { name: "partition", network: Network::Namespaces, nemeses, max_active: 1, workload })
        .await?;
    Ok(())
}

/// Every nemesis in one schedule, two faults at once (churn alone), in namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, iproute2, iptables and libfaketime; scripts/test runs this"]
async fn mixed_faults() -> anyhow::Result<()> {
    let nemeses: Vec<Box<dyn Nemesis>> = vec![
        Box::new(Kill::default()),
        Box::new(Pause::default()),
        Box::new(Partition::default()),
        Box::new(ClockSkew::new()?),
        Box::new(Churn::default()),
        Box::new(Stranger::default()),
    ];
    let workload = Workload::default();
    run(Run { name: "mixed", network: Network::Namespaces, nemeses, max_active: 2, workload })
        .await?;
    Ok(())
}

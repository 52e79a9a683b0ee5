//! [`ClockSkew`]: run one node with its clocks at another rate (libfaketime).

use std::path::PathBuf;

use anyhow::Context;
use futures::future::BoxFuture;

use super::{describe_nodes, Fault, Nemesis};
use crate::random::Random;
use crate::system::System;

/// Where Debian's `libfaketime` package puts the library.
const LIBRARY: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Restarts one node (the leader half the time) under libfaketime with `FAKETIME="+0 x2"`
/// or `"+0 x0.5"`: from its start, every clock the process reads through libc, wall
/// clock and `CLOCK_MONOTONIC` alike, runs at twice or half the real rate, and its sleeps
/// and timeouts (nanosleep, poll, epoll_wait, …) are scaled to match, so its timers
/// (heartbeats, election timeouts, the lease) run fast or slow in real time. Healing
/// restarts it without. libfaketime cannot change a running process's rate without
/// moving `CLOCK_MONOTONIC` backwards (`FAKETIME_XRESET`) or making it jump, hence the
/// restarts; a skew is held a few seconds, so the wall clock drifts far less than the
/// 30 s the cluster's request signatures allow. Pair it with [`super::Pause`] to move
/// leadership onto or off the skewed node while it runs.
#[derive(Debug)]
pub struct ClockSkew {
    library: PathBuf,
    skewed: Option<usize>,
}

impl ClockSkew {
    /// Returns the nemesis, or what is missing for it.
    pub fn new() -> anyhow::Result<Self> {
        let library = PathBuf::from(LIBRARY);
        anyhow::ensure!(
            library.is_file(),
            "{LIBRARY} is missing: apt-get install faketime (scripts/test does this)"
        );
        Ok(Self { library, skewed: None })
    }
}

impl Nemesis for ClockSkew {
    fn name(&self) -> &'static str {
        "clock-skew"
    }

    fn inject<'a>(
        &'a mut self,
        system: &'a mut System,
        random: &'a mut Random,
    ) -> BoxFuture<'a, anyhow::Result<Option<Fault>>> {
        Box::pin(async move {
            let leader = system.leader().await;
            let leader_first = random.chance(1, 2);
            let Some(victim) = system.reserve(random, 1, leader_first).await.pop() else {
                return Ok(None);
            };
            let rate = *random.pick(&["2", "0.5"]).expect("two rates");
            let node = &mut system.cluster.nodes[victim];
            node.set_env("LD_PRELOAD", Some(&self.library.display().to_string()));
            node.set_env("FAKETIME", Some(&format!("+0 x{rate}")));
            node.restart().context("restarting a node under libfaketime")?;
            self.skewed = Some(victim);
            let description =
                format!("restart {} with clocks at x{rate}", describe_nodes(&[victim], leader));
            Ok(Some(Fault { description, hold: random.millis(4_000, 8_000) }))
        })
    }

    fn heal<'a>(&'a mut self, system: &'a mut System) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if let Some(victim) = self.skewed.take() {
                let node = &mut system.cluster.nodes[victim];
                node.set_env("LD_PRELOAD", None);
                node.set_env("FAKETIME", None);
                node.restart()?;
                system.release(&[victim]);
            }
            Ok(())
        })
    }
}

//! [`Kill`]: SIGKILL one or two nodes, restart them on their data when healed.

use futures::future::BoxFuture;

use super::{describe_nodes, Fault, Nemesis};
use crate::random::Random;
use crate::system::System;

/// Crashes nodes: SIGKILL (no flush, no goodbye), then a restart on the same data dir.
/// One node in four faults is two nodes at once, so the cluster loses its quorum.
#[derive(Debug, Default)]
pub struct Kill {
    killed: Vec<usize>,
}

impl Nemesis for Kill {
    fn name(&self) -> &'static str {
        "kill"
    }

    fn inject<'a>(
        &'a mut self,
        system: &'a mut System,
        random: &'a mut Random,
    ) -> BoxFuture<'a, anyhow::Result<Option<Fault>>> {
        Box::pin(async move {
            let count = if random.chance(1, 4) { 2 } else { 1 };
            let leader_first = random.chance(1, 2);
            let leader = system.leader().await;
            let victims = system.reserve(random, count, leader_first).await;
            if victims.is_empty() {
                return Ok(None);
            }
            for victim in &victims {
                system.cluster.nodes[*victim].kill();
            }
            self.killed = victims;
            let description = format!("SIGKILL {}", describe_nodes(&self.killed, leader));
            Ok(Some(Fault { description, hold: random.millis(200, 3_000) }))
        })
    }

    fn heal<'a>(&'a mut self, system: &'a mut System) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let killed = std::mem::take(&mut self.killed);
            for victim in &killed {
                system.cluster.nodes[*victim].restart()?;
            }
            system.release(&killed);
            Ok(())
        })
    }
}

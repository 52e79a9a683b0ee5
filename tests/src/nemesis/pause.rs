//! [`Pause`]: SIGSTOP one or two nodes, SIGCONT them when healed.

use std::process::Command;

use futures::future::BoxFuture;

use super::{describe_nodes, Fault, Nemesis, ELECTION_TIMEOUT_MS};
use crate::random::Random;
use crate::system::System;

/// Freezes nodes as a long GC pause or a stalled VM would (the process's clocks run on).
/// Two pauses in three outlast the longest election timeout plus the leader's lease, so
/// the others elect a new leader while the frozen one still believes it leads; the rest
/// are shorter than an election timeout. One fault in five freezes two nodes.
#[derive(Debug, Default)]
pub struct Pause {
    /// Per frozen node: its index and the process id that was stopped.
    stopped: Vec<(usize, u32)>,
}

impl Nemesis for Pause {
    fn name(&self) -> &'static str {
        "pause"
    }

    fn inject<'a>(
        &'a mut self,
        system: &'a mut System,
        random: &'a mut Random,
    ) -> BoxFuture<'a, anyhow::Result<Option<Fault>>> {
        Box::pin(async move {
            let count = if random.chance(1, 5) { 2 } else { 1 };
            let leader_first = random.chance(2, 3);
            let leader = system.leader().await;
            let victims = system.reserve(random, count, leader_first).await;
            for victim in &victims {
                let node = &system.cluster.nodes[*victim];
                if let Some(pid) = node.pid() {
                    node.signal("STOP")?;
                    self.stopped.push((*victim, pid));
                }
            }
            if self.stopped.is_empty() {
                system.release(&victims);
                return Ok(None);
            }
            // Past the lease (half an election timeout) and the followers' longest
            // election timeout (two), or shorter than one.
            let hold = if random.chance(2, 3) {
                random.millis(ELECTION_TIMEOUT_MS * 5 / 2, 3_000)
            } else {
                random.millis(ELECTION_TIMEOUT_MS / 3, ELECTION_TIMEOUT_MS * 4 / 3)
            };
            let description = format!("SIGSTOP {}", describe_nodes(&victims, leader));
            Ok(Some(Fault { description, hold }))
        })
    }

    fn heal<'a>(&'a mut self, system: &'a mut System) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let stopped = std::mem::take(&mut self.stopped);
            for (victim, pid) in &stopped {
                let node = &system.cluster.nodes[*victim];
                // A node restarted since (by another fault) is another process.
                if node.pid() == Some(*pid) {
                    node.signal("CONT")?;
                }
            }
            let victims: Vec<usize> = stopped.iter().map(|(victim, _)| *victim).collect();
            system.release(&victims);
            Ok(())
        })
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        for (_, pid) in &self.stopped {
            let _ = Command::new("kill").args(["-CONT", &pid.to_string()]).status();
        }
    }
}

//! [`Partition`]: cut links between nodes in network namespaces, heal them.

use futures::future::BoxFuture;

use super::{describe_nodes, Fault, Nemesis};
use crate::netns::Cut;
use crate::random::Random;
use crate::system::System;

/// Cuts links between members (the clients still reach every node), in one of three
/// shapes: one node isolated from the others (the leader half the time); one link cut
/// both ways, the third node still seeing both (a partial partition); or one direction
/// of one link (a node hears nothing from another that still hears it). Needs a
/// [`crate::system::Network::Namespaces`] system.
#[derive(Debug, Default)]
pub struct Partition {
    /// The rules in force; dropping them heals.
    cuts: Vec<Cut>,
}

impl Nemesis for Partition {
    fn name(&self) -> &'static str {
        "partition"
    }

    fn inject<'a>(
        &'a mut self,
        system: &'a mut System,
        random: &'a mut Random,
    ) -> BoxFuture<'a, anyhow::Result<Option<Fault>>> {
        Box::pin(async move {
            let members = system.members().to_vec();
            if members.len() < 2 {
                return Ok(None);
            }
            let leader = system.leader().await;
            let network = system
                .network
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("partitions need nodes in network namespaces"))?;
            let (description, pairs) = match random.below(3) {
                0 => {
                    let isolated = match leader {
                        Some(leader) if random.chance(1, 2) => leader,
                        _ => *random.pick(&members).expect("two members or more"),
                    };
                    let others: Vec<usize> =
                        members.iter().copied().filter(|node| *node != isolated).collect();
                    let pairs = others
                        .iter()
                        .flat_map(|other| [(isolated, *other), (*other, isolated)])
                        .collect::<Vec<_>>();
                    (format!("isolate {}", describe_nodes(&[isolated], leader)), pairs)
                }
                shape => {
                    let first = *random.pick(&members).expect("two members or more");
                    let rest: Vec<usize> =
                        members.iter().copied().filter(|node| *node != first).collect();
                    let second = *random.pick(&rest).expect("one more");
                    let (first_name, second_name) =
                        (describe_nodes(&[first], leader), describe_nodes(&[second], leader));
                    if shape == 1 {
                        let text = format!("cut the link {first_name} - {second_name}");
                        (text, vec![(first, second), (second, first)])
                    } else {
                        let text = format!("{first_name} hears nothing from {second_name}");
                        (text, vec![(first, second)])
                    }
                }
            };
            // Node i runs in the network's host i (System adds them together).
            for (to, from) in pairs {
                self.cuts.push(network.cut(to, from)?);
            }
            Ok(Some(Fault { description, hold: random.millis(1_000, 4_000) }))
        })
    }

    fn heal<'a>(&'a mut self, _system: &'a mut System) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.cuts.clear();
            Ok(())
        })
    }
}

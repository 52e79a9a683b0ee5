//! [`Churn`]: replace a member at runtime while clients run.

use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use serde_json::Value;

use super::{Fault, Nemesis};
use crate::random::Random;
use crate::system::{System, ADMIN_TOKEN, RECOVERY};
use crate::wait_until;

/// Adds a node (it joins as a learner: a fourth voter would be even), then removes a
/// member (the leader one time in three), half the time with
/// `DELETE /api/cluster/members/{id}` sent to another member, half the time with
/// `POST /api/cluster/leave` sent to the member itself; the autopilot then promotes the
/// learner. Healing waits for three voters without the removed node and stops it
/// (clients reach it until then). Runs only when no other fault is in force.
#[derive(Debug, Default)]
pub struct Churn {
    /// The removed node and the one that joined, until healed.
    change: Option<(usize, usize)>,
}

/// Returns node `node_id`'s role in a `GET /api/cluster` view.
fn role(view: &Value, node_id: u64) -> Option<&str> {
    view["members"].as_array()?.iter().find(|member| member["node_id"] == node_id)?["raft_role"]
        .as_str()
}

impl Nemesis for Churn {
    fn name(&self) -> &'static str {
        "churn"
    }

    fn is_exclusive(&self) -> bool {
        true
    }

    fn inject<'a>(
        &'a mut self,
        system: &'a mut System,
        random: &'a mut Random,
    ) -> BoxFuture<'a, anyhow::Result<Option<Fault>>> {
        Box::pin(async move {
            let joined = system.add_node().await.context("adding a node")?;
            let joined_id = system.node_id(joined).context("the new node's id")?;
            let observer = system.members()[0];
            wait_until("the new node is a learner", RECOVERY, || {
                let view = system.cluster_view(observer);
                async move { Ok(matches!(role(&view.await?, joined_id), Some("learner" | "voter"))) }
            })
            .await?;

            let leader = system.leader().await;
            let leader_first = random.chance(1, 3);
            let Some(left) = system.reserve(random, 1, leader_first).await.pop() else {
                return Ok(None);
            };
            let left_id = system.node_id(left).context("the leaving node's id")?;
            let by_leave = random.chance(1, 2);
            let others: Vec<usize> =
                system.members().iter().copied().filter(|node| *node != left).collect();
            let asked =
                if by_leave { left } else { *random.pick(&others).context("another member")? };
            let url = if by_leave {
                system.cluster.nodes[left].url("/api/cluster/leave")
            } else {
                system.cluster.nodes[asked].url(&format!("/api/cluster/members/{left_id}"))
            };
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
            wait_until("the member is removed", RECOVERY, || {
                let request = if by_leave { client.post(&url) } else { client.delete(&url) };
                let request = request.bearer_auth(ADMIN_TOKEN).send();
                async move {
                    let status = request.await?.status();
                    // 404: no longer a member, by an earlier attempt whose answer was lost.
                    Ok(status.is_success() || status == reqwest::StatusCode::NOT_FOUND)
                }
            })
            .await?;
            self.change = Some((left, joined));
            let how =
                if by_leave { "leave".to_string() } else { format!("DELETE on node {asked}") };
            let role = if Some(left) == leader { " (leader)" } else { "" };
            let description = format!("node {joined} joined, node {left}{role} removed by {how}");
            Ok(Some(Fault { description, hold: random.millis(500, 2_000) }))
        })
    }

    fn heal<'a>(&'a mut self, system: &'a mut System) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let Some((left, joined)) = self.change.take() else { return Ok(()) };
            let left_id = system.node_id(left).context("the removed node's id")?;
            let joined_id = system.node_id(joined).context("the new node's id")?;
            system.replace_member(left, joined);
            let observer = system.members()[0];
            wait_until(
                "three voters, the new node one of them, the removed one not",
                RECOVERY,
                || {
                    let view = system.cluster_view(observer);
                    async move {
                        let view = view.await?;
                        let voters: Vec<u64> = serde_json::from_value(view["voters"].clone())?;
                        Ok(voters.len() == 3
                            && voters.contains(&joined_id)
                            && !voters.contains(&left_id))
                    }
                },
            )
            .await?;
            system.cluster.nodes[left].kill();
            system.release(&[left]);
            Ok(())
        })
    }
}

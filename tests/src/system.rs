//! [`System`]: the cluster under test as nemeses and clients see it: its nodes (on
//! loopback or in network namespaces), which of them are meant to be members, the nodes
//! clients send requests to, and the nodes a fault holds.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context;

use crate::netns::Netns;
use crate::random::Random;
use crate::{get_json, wait_until, Placement, TestCluster};

/// The admin token robustness clusters start with (for membership changes).
pub const ADMIN_TOKEN: &str = "robustness-admin-token";

/// How long the cluster may take to form or to recover after faults.
pub const RECOVERY: Duration = Duration::from_secs(60);

/// Where the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Loopback ports: kills, pauses, clock skew and churn, no partitions.
    Loopback,
    /// A network namespace per node (needs root): partitions too.
    Namespaces,
}

/// The nodes clients send requests to, shared with them: `(node index, base URL)`.
#[derive(Debug, Clone, Default)]
pub struct Endpoints(Arc<RwLock<Vec<(usize, String)>>>);

impl Endpoints {
    /// Returns one node, chosen with `random`.
    pub fn pick(&self, random: &mut Random) -> Option<(usize, String)> {
        let endpoints = self.0.read().unwrap_or_else(PoisonError::into_inner);
        random.pick(&endpoints).cloned()
    }

    /// Returns every node.
    pub fn all(&self) -> Vec<(usize, String)> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn add(&self, node: usize, base: String) {
        self.0.write().unwrap_or_else(PoisonError::into_inner).push((node, base));
    }

    fn remove(&self, node: usize) {
        self.0.write().unwrap_or_else(PoisonError::into_inner).retain(|(index, _)| *index != node);
    }
}

/// The cluster under test.
#[derive(Debug)]
pub struct System {
    // Dropped in this order: the nodes, then their namespaces.
    pub cluster: TestCluster,
    pub network: Option<Netns>,
    voters: usize,
    members: Vec<usize>,
    node_ids: Vec<Option<u64>>,
    endpoints: Endpoints,
    busy: BTreeSet<usize>,
}

impl System {
    /// Starts `nodes` nodes in `root` with `extra_args` (after [`crate::CLUSTER_ARGS`] and
    /// the admin token) and waits until they form one cluster.
    pub async fn start(
        root: &Path,
        network: Network,
        nodes: usize,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let mut args = vec!["--admin-token", ADMIN_TOKEN];
        args.extend_from_slice(extra_args);
        let (cluster, network) = match network {
            Network::Loopback => (TestCluster::start(root, nodes, &args)?, None),
            Network::Namespaces => {
                let network = Netns::create(nodes)?;
                let placements = (0..nodes).map(|host| network.placement(host)).collect();
                (TestCluster::start_at(root, placements, &args)?, Some(network))
            }
        };
        let mut system = Self {
            cluster,
            network,
            voters: nodes,
            members: (0..nodes).collect(),
            node_ids: vec![None; nodes],
            endpoints: Endpoints::default(),
            busy: BTreeSet::new(),
        };
        system.wait_converged().await?;
        for node in 0..nodes {
            system.node_ids[node] = Some(system.cluster.node_id(node).await?);
            system.endpoints.add(node, system.cluster.nodes[node].url(""));
        }
        Ok(system)
    }

    /// Returns the nodes meant to be members now.
    pub fn members(&self) -> &[usize] {
        &self.members
    }

    /// Returns the nodes clients send requests to.
    pub fn endpoints(&self) -> Endpoints {
        self.endpoints.clone()
    }

    /// Returns node `node`'s Raft id, once known.
    pub fn node_id(&self, node: usize) -> Option<u64> {
        self.node_ids.get(node).copied().flatten()
    }

    /// Waits until the members agree on a leader and on the number of voters and each
    /// says it is ready (`/api/health/ready`: a node whose Raft has stopped can still
    /// show the others' view in `/api/health`), and returns the leader.
    pub async fn wait_converged(&self) -> anyhow::Result<usize> {
        let leader = self.cluster.wait_converged(&self.members, self.voters, RECOVERY).await?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let urls: Vec<String> = self
            .members
            .iter()
            .map(|node| self.cluster.nodes[*node].url("/api/health/ready"))
            .collect();
        wait_until("every member is ready", RECOVERY, || {
            let urls = &urls;
            let checks: Vec<_> = urls.iter().map(|url| client.get(url).send()).collect();
            async move {
                let answers = futures::future::join_all(checks).await;
                let not_ready: Vec<&String> = answers
                    .iter()
                    .zip(urls)
                    .filter(|(answer, _)| !answer.as_ref().is_ok_and(|reply| reply.status() == 200))
                    .map(|(_, url)| url)
                    .collect();
                anyhow::ensure!(not_ready.is_empty(), "not ready: {not_ready:?}");
                Ok(true)
            }
        })
        .await?;
        Ok(leader)
    }

    /// Returns the member that leads by its own account (the highest term, if more than
    /// one believes it does), asking each for at most a second.
    pub async fn leader(&self) -> Option<usize> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().ok()?;
        let views = self.members.iter().map(|node| {
            let request = client.get(self.cluster.nodes[*node].url("/api/health")).send();
            async move {
                let view: serde_json::Value = request.await.ok()?.json().await.ok()?;
                let leads = view["node_id"] == view["cluster"]["leader_id"];
                leads.then(|| (view["cluster"]["term"].as_u64().unwrap_or(0), *node))
            }
        });
        futures::future::join_all(views).await.into_iter().flatten().max().map(|(_, node)| node)
    }

    /// Reserves up to `count` members no other fault holds, the leader first when
    /// `leader_first` and it is free; returns them (none when all are held).
    pub async fn reserve(
        &mut self,
        random: &mut Random,
        count: usize,
        leader_first: bool,
    ) -> Vec<usize> {
        let mut free: Vec<usize> =
            self.members.iter().copied().filter(|node| !self.busy.contains(node)).collect();
        let mut chosen = Vec::new();
        if leader_first {
            if let Some(leader) = self.leader().await.filter(|leader| free.contains(leader)) {
                free.retain(|node| *node != leader);
                chosen.push(leader);
            }
        }
        while chosen.len() < count && !free.is_empty() {
            chosen.push(free.remove(random.below(free.len() as u64) as usize));
        }
        self.busy.extend(&chosen);
        chosen
    }

    /// Frees nodes [`System::reserve`] returned.
    pub fn release(&mut self, nodes: &[usize]) {
        for node in nodes {
            self.busy.remove(node);
        }
    }

    /// Starts a new node that joins through the members (in a namespace of its own on a
    /// namespace network); clients reach it once it is ready.
    pub async fn add_node(&mut self) -> anyhow::Result<usize> {
        let placement = match &mut self.network {
            Some(network) => network.add_host()?,
            None => Placement::loopback(crate::free_port()),
        };
        let node = self.cluster.add_node_at(&self.members, placement)?;
        self.node_ids.push(None);
        self.cluster.nodes[node].wait_ready(RECOVERY).await?;
        self.node_ids[node] = Some(self.cluster.node_id(node).await?);
        self.endpoints.add(node, self.cluster.nodes[node].url(""));
        Ok(node)
    }

    /// Makes `joined` a member in place of `left`, and stops sending requests to `left`.
    pub fn replace_member(&mut self, left: usize, joined: usize) {
        self.members.retain(|node| *node != left);
        self.members.push(joined);
        self.endpoints.remove(left);
    }

    /// Returns `GET /api/cluster` as node `node` answers it.
    pub async fn cluster_view(&self, node: usize) -> anyhow::Result<serde_json::Value> {
        get_json(&self.cluster.nodes[node].url("/api/cluster"))
            .await
            .with_context(|| format!("GET /api/cluster on node {node}"))
    }
}

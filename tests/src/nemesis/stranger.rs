//! [`Stranger`]: the attacks of docs/threat-model.md, by someone on the network without
//! the cluster secret, while clients work: an impostor node that gossips with a member's
//! id, forged and replayed internal requests (forged writes among them), oversized
//! unsigned bodies, and silent connections. None may change anything: when healed, it
//! checks that no forged write took effect and that every answer to an attack was a
//! refusal; the history check does the rest.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use shoal_raft::auth::RequestHead;
use shoal_raft::{ClusterSecret, Command};
use shoal_storage::codec;

use super::{Fault, Nemesis};
use crate::random::Random;
use crate::system::System;
use crate::{TestNode, CLUSTER_ARGS, TEST_SECRET};

/// What the attacks in force hold, and what they saw.
#[derive(Default)]
pub struct Stranger {
    impostor: Option<TestNode>,
    _impostor_dir: Option<tempfile::TempDir>,
    silent: Vec<std::net::TcpStream>,
    stop: Option<Arc<AtomicBool>>,
    attacker: Option<tokio::task::JoinHandle<()>>,
    /// Session ids forged writes tried to create, and answers that were not refusals.
    seen: Arc<Mutex<Seen>>,
}

impl std::fmt::Debug for Stranger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stranger").field("silent", &self.silent.len()).finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Seen {
    forged_ids: Vec<String>,
    accepted: Vec<String>,
}

const WRONG_SECRET: &str = "a-stranger-guessing-the-secret";

impl Nemesis for Stranger {
    fn name(&self) -> &'static str {
        "stranger"
    }

    fn inject<'a>(
        &'a mut self,
        system: &'a mut System,
        random: &'a mut Random,
    ) -> BoxFuture<'a, anyhow::Result<Option<Fault>>> {
        Box::pin(async move {
            let members = system.members().to_vec();
            let Some(&victim) = random.pick(&members) else { return Ok(None) };
            let node = &system.cluster.nodes[victim];
            let Some(victim_id) = system.node_id(victim) else { return Ok(None) };
            let hold = random.millis(1_000, 4_000);
            let description = match random.below(3) {
                0 => {
                    // Gossip as the victim, from another address, with the wrong secret.
                    let dir = tempfile::tempdir()?;
                    let peers: Vec<String> =
                        members.iter().map(|member| system.cluster.nodes[*member].addr()).collect();
                    let mut args: Vec<String> =
                        CLUSTER_ARGS.iter().map(|arg| arg.to_string()).collect();
                    let secret_at = args.iter().position(|arg| arg == TEST_SECRET).unwrap();
                    args[secret_at] = WRONG_SECRET.to_string();
                    args.extend(["--peers".into(), peers.join(","), "--node-id".into()]);
                    args.push(victim_id.to_string());
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    self.impostor = Some(TestNode::start(&dir.path().join("impostor"), &args)?);
                    self._impostor_dir = Some(dir);
                    format!("an impostor gossips as node {victim} (id {victim_id})")
                }
                1 => {
                    let stop = Arc::new(AtomicBool::new(false));
                    let attack = forge_and_replay(
                        node.url(""),
                        node.addr(),
                        victim_id,
                        self.seen.clone(),
                        stop.clone(),
                    );
                    self.attacker = Some(tokio::spawn(attack));
                    self.stop = Some(stop);
                    format!("forged, replayed and oversized internal requests to node {victim}")
                }
                _ => {
                    for _ in 0..200 {
                        match std::net::TcpStream::connect(node.addr()) {
                            Ok(socket) => self.silent.push(socket),
                            Err(_) => break,
                        }
                    }
                    format!("{} silent connections to node {victim}", self.silent.len())
                }
            };
            Ok(Some(Fault { description, hold }))
        })
    }

    fn heal<'a>(&'a mut self, system: &'a mut System) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if let Some(mut impostor) = self.impostor.take() {
                impostor.kill();
            }
            self._impostor_dir = None;
            self.silent.clear();
            if let Some(stop) = self.stop.take() {
                stop.store(true, Ordering::Relaxed);
            }
            if let Some(attacker) = self.attacker.take() {
                attacker.await?;
            }
            let (forged, accepted) = {
                let mut seen = self.seen.lock().unwrap();
                (std::mem::take(&mut seen.forged_ids), std::mem::take(&mut seen.accepted))
            };
            anyhow::ensure!(accepted.is_empty(), "attacks were answered: {accepted:?}");
            // A forged write that took effect would have made its session. Reads are
            // linearizable on every node, so one node's 404 settles it (others may be
            // paused or cut off by another fault).
            let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build()?;
            let urls: Vec<String> =
                system.members().iter().map(|node| system.cluster.nodes[*node].url("")).collect();
            let checks = forged.iter().take(20).map(|id| {
                let (client, urls) = (&client, &urls);
                async move {
                    for base in urls {
                        let Ok(answer) =
                            client.get(format!("{base}/api/sessions/{id}")).send().await
                        else {
                            continue;
                        };
                        match answer.status().as_u16() {
                            200 => anyhow::bail!("forged session {id} exists ({base})"),
                            404 => return Ok(()),
                            _ => {}
                        }
                    }
                    Ok(())
                }
            });
            for check in futures::future::join_all(checks).await {
                check?;
            }
            Ok(())
        })
    }
}

/// Until `stop`: forged writes (signed with a guessed secret), a genuine request played
/// again, and a 250 MiB body declared unsigned, to node `target` at `base`/`addr`; every
/// answer must be a refusal.
async fn forge_and_replay(
    base: String,
    addr: String,
    target: u64,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let (genuine, stranger) =
        (ClusterSecret::new(TEST_SECRET.as_bytes()), ClusterSecret::new(WRONG_SECRET.as_bytes()));
    let post = |head: &RequestHead, secret: &ClusterSecret, body: Vec<u8>| {
        let mut request = client.post(format!("{base}{}", head.path_and_query));
        for (name, value) in head.headers(secret) {
            request = request.header(name, value);
        }
        request.body(body).send()
    };
    // A request a member really sent (here: made with the secret), recorded once.
    let read_index = codec::encode(&());
    let recorded = RequestHead::new("POST", "/internal/raft/read-index", target, &read_index);
    let _ = post(&recorded, &genuine, read_index.clone()).await;
    let mut round = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let id = format!("{:032x}", rand::random::<u128>() | 0xf0f0);
        seen.lock().unwrap().forged_ids.push(id.clone());
        let forged = Command::CreateSession { id, data: "{}".into(), ttl_ms: 60_000 };
        let body = codec::encode(&forged);
        let head = RequestHead::new("POST", "/internal/raft/forward", target, &body);
        let attempts = [
            ("forged write", post(&head, &stranger, body).await),
            ("replayed request", post(&recorded, &genuine, read_index.clone()).await),
        ];
        for (what, answer) in attempts {
            // An error is a refusal too (the node closed the connection).
            if let Ok(answer) = answer {
                if answer.status() != 401 {
                    seen.lock().unwrap().accepted.push(format!("{what}: {}", answer.status()));
                }
            }
        }
        if round.is_multiple_of(5) {
            let addr = addr.clone();
            let refused = tokio::task::spawn_blocking(move || oversized_refused(&addr)).await;
            if matches!(refused, Ok(Some(false))) {
                seen.lock().unwrap().accepted.push("a 250 MiB unsigned body".into());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Declares a 250 MiB unsigned body and returns whether the node refused it from the head
/// (`None`: it could not be asked).
fn oversized_refused(addr: &str) -> Option<bool> {
    let mut socket = std::net::TcpStream::connect(addr).ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let head =
        "POST /internal/raft/append HTTP/1.1\r\nHost: x\r\nContent-Length: 262144000\r\n\r\n";
    socket.write_all(head.as_bytes()).ok()?;
    let mut answer = [0_u8; 64];
    let read = std::io::Read::read(&mut socket, &mut answer).ok()?;
    Some(answer[..read].starts_with(b"HTTP/1.1 401"))
}

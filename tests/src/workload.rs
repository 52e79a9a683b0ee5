//! The clients of a robustness run: each sends reads, writes and compare-and-sets on a
//! few session registers to random nodes, one request at a time, and records every
//! operation with its invocation and completion times.
//!
//! A set of registers is used for one key epoch, then fresh ones replace it, so that
//! each register's history stays a few thousand operations long however long the run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::history::{Call, Operation, Outcome, Recorder};
use crate::random::Random;
use crate::system::Endpoints;

/// How clients load the cluster.
#[derive(Debug, Clone)]
pub struct Workload {
    pub clients: usize,
    /// Registers in use at once.
    pub keys: usize,
    /// How long a set of registers is used before fresh ones replace it.
    pub key_epoch: Duration,
    /// How long a client waits for an answer (longer than the nodes'
    /// `--request-timeout-ms`, so that most waits end in their 503).
    pub request_timeout: Duration,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            clients: 8,
            keys: 3,
            key_epoch: Duration::from_secs(10),
            request_timeout: Duration::from_secs(4),
        }
    }
}

/// What clients share: where to record, where to send, and the source of unique values.
#[derive(Debug, Clone)]
pub struct Clients {
    pub recorder: Arc<Recorder>,
    pub endpoints: Endpoints,
    pub http: reqwest::Client,
    values: Arc<AtomicU64>,
}

impl Clients {
    /// Returns clients recording into `recorder`, sending to `endpoints`.
    pub fn new(recorder: Arc<Recorder>, endpoints: Endpoints, workload: &Workload) -> Self {
        let http = reqwest::Client::builder()
            .timeout(workload.request_timeout)
            .build()
            .expect("a client with a timeout builds");
        Self { recorder, endpoints, http, values: Arc::new(AtomicU64::new(1)) }
    }

    /// Returns a value no operation of this run has written.
    pub fn unique_value(&self) -> u64 {
        self.values.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `call` on register `key` (session `id`) to node `node` at `base`, records
    /// it as client `client`'s, and returns the outcome.
    pub async fn perform(
        &self,
        client: usize,
        (key, id): (usize, &str),
        (node, base): (usize, &str),
        call: Call,
    ) -> Outcome {
        let url = format!("{base}/api/sessions/{id}");
        let request = match call {
            Call::Read => self.http.get(&url),
            Call::Write { value } => self.http.put(&url).json(&json!({"data": {"v": value}})),
            Call::Cas { expected_version, value } => self
                .http
                .patch(&url)
                .header("if-match", format!("\"{expected_version}\""))
                .json(&json!({"v": value})),
        };
        let invoked_ns = self.recorder.now_ns();
        let outcome = match request.send().await {
            Err(error) if error.is_connect() => Outcome::Unsent,
            Err(error) => Outcome::Indeterminate { reason: error_kind(&error) },
            Ok(response) => outcome_of(call, response).await,
        };
        let completed_ns = self.recorder.now_ns();
        let op = Operation {
            client,
            key,
            node,
            call,
            outcome: outcome.clone(),
            invoked_ns,
            completed_ns,
        };
        self.recorder.record(op);
        outcome
    }

    /// Creates a register on some node, retrying for up to `deadline`; returns its key.
    pub async fn create_register(
        &self,
        random: &mut Random,
        deadline: Duration,
    ) -> anyhow::Result<(usize, String)> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < deadline {
            let Some((_, base)) = self.endpoints.pick(random) else { bail!("no node to send to") };
            let value = self.unique_value();
            let request =
                self.http.post(format!("{base}/api/sessions")).json(&json!({"data": {"v": value}}));
            match request.send().await {
                Ok(response) if response.status() == StatusCode::CREATED => {
                    let body: Value = response.json().await?;
                    let id =
                        body["id"].as_str().context("a created session has an id")?.to_string();
                    let version = body["version"].as_u64().context("and a version")?;
                    return Ok((self.recorder.add_key(id.clone(), value, version), id));
                }
                Ok(response) => last = format!("answered {}", response.status()),
                Err(error) => last = error_kind(&error),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("no register could be created within {deadline:?}; last: {last}")
    }
}

fn error_kind(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".to_string()
    } else if error.is_connect() {
        "connect".to_string()
    } else {
        format!("{error}")
    }
}

/// Maps an answer to an outcome: 2xx with the session, 404, 412, other 4xx (refused),
/// and everything else (5xx, a body that does not read) as unknown.
async fn outcome_of(call: Call, response: reqwest::Response) -> Outcome {
    let status = response.status();
    match status {
        StatusCode::NOT_FOUND => return Outcome::NotFound,
        StatusCode::PRECONDITION_FAILED => return Outcome::Mismatch,
        status if status.is_client_error() => return Outcome::Failed { status: status.as_u16() },
        status if !status.is_success() => {
            return Outcome::Indeterminate { reason: format!("status {}", status.as_u16()) }
        }
        _ => {}
    }
    let body: Value = match response.json().await {
        Ok(body) => body,
        Err(error) => {
            return Outcome::Indeterminate { reason: format!("body: {}", error_kind(&error)) }
        }
    };
    let Some(version) = body["version"].as_u64() else {
        return Outcome::Indeterminate { reason: format!("no version in {body}") };
    };
    match call {
        Call::Read => Outcome::Read { value: body["data"]["v"].as_u64(), version },
        Call::Write { .. } | Call::Cas { .. } => Outcome::Written { version },
    }
}

/// Clients at work; [`Traffic::stop`] ends them.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    registers: Arc<RwLock<Vec<(usize, String)>>>,
}

impl Workload {
    /// Creates the first registers and starts the clients and the key rotation, each
    /// drawing from its own fork of `random`.
    pub async fn start(&self, clients: &Clients, random: &Random) -> anyhow::Result<Traffic> {
        let mut rotation_random = random.fork(u64::MAX);
        let mut first = Vec::new();
        for _ in 0..self.keys {
            first.push(
                clients.create_register(&mut rotation_random, crate::system::RECOVERY).await?,
            );
        }
        let registers = Arc::new(RwLock::new(first));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for client in 0..self.clients {
            let (clients, stop, registers) = (clients.clone(), stop.clone(), registers.clone());
            let random = random.fork(client as u64);
            tasks.push(tokio::spawn(run_client(client, clients, random, registers, stop)));
        }
        let (clients, workload) = (clients.clone(), self.clone());
        let (stop_rotation, registers_rotated) = (stop.clone(), registers.clone());
        tasks.push(tokio::spawn(async move {
            rotate(workload, clients, rotation_random, registers_rotated, stop_rotation).await
        }));
        Ok(Traffic { stop, tasks, registers })
    }
}

impl Traffic {
    /// Stops the clients (each finishes its request in flight) and returns the registers
    /// in use at the end.
    pub async fn stop(self) -> anyhow::Result<Vec<(usize, String)>> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await??;
        }
        Ok(self.registers.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

/// One client: read 50 %, write 25 %, compare-and-set 25 % (from the last version it saw
/// of that register), on a random register and node.
async fn run_client(
    client: usize,
    clients: Clients,
    mut random: Random,
    registers: Arc<RwLock<Vec<(usize, String)>>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut seen_versions: HashMap<usize, u64> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let register = {
            let registers = registers.read().unwrap_or_else(PoisonError::into_inner);
            random.pick(&registers).cloned().context("registers exist")?
        };
        let Some(node) = clients.endpoints.pick(&mut random) else { bail!("no node to send to") };
        let key = register.0;
        let call = match random.below(4) {
            0 | 1 => Call::Read,
            2 => Call::Write { value: clients.unique_value() },
            _ => Call::Cas {
                expected_version: seen_versions.get(&key).copied().unwrap_or(1),
                value: clients.unique_value(),
            },
        };
        let outcome = clients.perform(client, (key, &register.1), (node.0, &node.1), call).await;
        match outcome {
            Outcome::Read { version, .. } | Outcome::Written { version } => {
                seen_versions.insert(key, version);
            }
            // A node that is down or without a leader: back off as a client honouring
            // Retry-After would, if not as long, rather than pile up unknown writes.
            Outcome::Unsent | Outcome::Indeterminate { .. } => {
                tokio::time::sleep(random.millis(100, 300)).await;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Replaces the registers in use with fresh ones every key epoch.
async fn rotate(
    workload: Workload,
    clients: Clients,
    mut random: Random,
    registers: Arc<RwLock<Vec<(usize, String)>>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut next_epoch = Instant::now() + workload.key_epoch;
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() < next_epoch {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let mut fresh = Vec::new();
        for _ in 0..workload.keys {
            // A cluster under a fault may take a while: the old registers serve
            // meanwhile, and the rotation tries again a second later.
            match clients.create_register(&mut random, Duration::from_secs(5)).await {
                Ok(register) => fresh.push(register),
                Err(error) => {
                    tracing::warn!(%error, "no fresh register this time");
                    break;
                }
            }
        }
        if fresh.len() == workload.keys {
            *registers.write().unwrap_or_else(PoisonError::into_inner) = fresh;
            next_epoch = Instant::now() + workload.key_epoch;
        } else {
            next_epoch = Instant::now() + Duration::from_secs(1);
        }
    }
    Ok(())
}

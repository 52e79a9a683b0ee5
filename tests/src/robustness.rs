//! A robustness run, as etcd's robustness tests do it: a 3-node cluster, clients on a
//! few session registers, a fault schedule from a seed, then healing, convergence,
//! writes and reads on every node and final reads of every register; then the history
//! is checked for linearizability, register by register. A failed run keeps its
//! directory (history, checker report, node logs) and names it.
//!
//! Settings from the environment, so that `scripts/robustness` runs the same tests
//! longer: `SHOAL_ROBUSTNESS_SEED` (replays a schedule), `SHOAL_ROBUSTNESS_SECS` (traffic
//! time, default 20), `SHOAL_ROBUSTNESS_NODE_ARGS` (more node flags, such as
//! `--no-read-lease`), `SHOAL_CHECK_BUDGET` (search steps per register),
//! `SHOAL_ROBUSTNESS_KEEP` (keep a passing run's directory too).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::history::{Call, History, Outcome, Recorder};
use crate::nemesis::{Nemesis, Schedule, ScheduleReport};
use crate::random::Random;
use crate::register::{check_key, KeyReport};
use crate::system::{Network, System, RECOVERY};
use crate::workload::{Clients, Workload};

/// What to run: where the nodes live and which faults to inject.
pub struct Run {
    pub name: &'static str,
    pub network: Network,
    pub nemeses: Vec<Box<dyn Nemesis>>,
    /// Faults in force at once, at most.
    pub max_active: usize,
    pub workload: Workload,
}

/// Settings a run takes from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    pub traffic: Duration,
    pub node_args: Vec<String>,
    pub budget: u64,
    /// Keep the directory (history, node logs) of a passing run too.
    pub keep: bool,
}

impl Settings {
    /// Reads the settings (see the module notes); a fresh seed when none is given.
    pub fn from_env() -> anyhow::Result<Self> {
        let number = |name: &str| -> anyhow::Result<Option<u64>> {
            match std::env::var(name) {
                Ok(text) => {
                    Ok(Some(text.trim().parse().with_context(|| format!("{name}={text}"))?))
                }
                Err(_) => Ok(None),
            }
        };
        Ok(Self {
            seed: number("SHOAL_ROBUSTNESS_SEED")?.unwrap_or_else(Random::fresh_seed),
            traffic: Duration::from_secs(number("SHOAL_ROBUSTNESS_SECS")?.unwrap_or(20)),
            node_args: std::env::var("SHOAL_ROBUSTNESS_NODE_ARGS")
                .map(|args| args.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            budget: number("SHOAL_CHECK_BUDGET")?.unwrap_or(20_000_000),
            keep: std::env::var_os("SHOAL_ROBUSTNESS_KEEP").is_some(),
        })
    }
}

/// What a passing run did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub seed: u64,
    pub operations: usize,
    pub checked: usize,
    pub registers: usize,
    pub faults: usize,
}

/// The flags robustness nodes run with, after [`crate::CLUSTER_ARGS`]: a node answers
/// 503 after 1.5 s without the cluster, before the clients' 4 s timeout.
const NODE_ARGS: &[&str] = &["--request-timeout-ms", "1500"];

/// Runs `run` and checks its history; fails with the kept directory's path when the
/// history is not linearizable, the checker gave up, or the cluster did not recover.
pub async fn run(run: Run) -> anyhow::Result<Summary> {
    crate::init_test_tracing();
    let settings = Settings::from_env()?;
    let name = run.name;
    let names: Vec<&str> = run.nemeses.iter().map(|nemesis| nemesis.name()).collect();
    println!(
        "robustness {name}: seed {} (SHOAL_ROBUSTNESS_SEED={} replays its schedule), {} s of traffic, nemeses {names:?}",
        settings.seed,
        settings.seed,
        settings.traffic.as_secs(),
    );
    let dir = tempfile::Builder::new().prefix(&format!("shoal-robustness-{name}-")).tempdir()?;
    let recorder = Arc::new(Recorder::default());
    let started = Instant::now();
    let driven = drive(run, &settings, dir.path(), recorder.clone()).await;
    let history = recorder.snapshot();
    let checking = Instant::now();
    let reports = check_all(&history, settings.budget);
    let check_time = checking.elapsed();
    let mut failures = String::new();
    if let Err(error) = &driven {
        let _ = writeln!(failures, "the run failed: {error:#}");
    }
    for report in reports.iter().filter(|report| !report.is_linearizable()) {
        let _ = writeln!(failures, "{}", report.explain(&history));
    }
    let faults = driven.as_ref().map_or(0, |report| report.faults.len());
    let checked: usize = reports.iter().map(|report| report.checked).sum();
    println!(
        "robustness {name}: seed {}: {} in {:.0} s, {faults} faults; checked {checked} operations on {} registers in {} ms",
        settings.seed,
        tally(&history),
        started.elapsed().as_secs_f64(),
        history.keys.len(),
        check_time.as_millis()
    );
    if failures.is_empty() {
        println!("robustness {name}: seed {}: linearizable", settings.seed);
        if settings.keep {
            history.save(&dir.path().join("history.jsonl"))?;
            println!("robustness {name}: history and node logs kept in {}", dir.keep().display());
        }
        let operations = history.ops.len();
        let registers = history.keys.len();
        return Ok(Summary { seed: settings.seed, operations, checked, registers, faults });
    }
    history.save(&dir.path().join("history.jsonl"))?;
    std::fs::write(dir.path().join("report.txt"), &failures)?;
    let kept = dir.keep();
    bail!(
        "robustness {name} failed with seed {} (replay: SHOAL_ROBUSTNESS_SEED={}):\n{failures}\nhistory, report and node logs kept in {}",
        settings.seed,
        settings.seed,
        kept.display()
    )
}

/// Starts the cluster and the clients, runs the schedule, heals, and records the
/// operations that show every node serves again and what every register holds.
async fn drive(
    run: Run,
    settings: &Settings,
    root: &Path,
    recorder: Arc<Recorder>,
) -> anyhow::Result<ScheduleReport> {
    let Run { network, nemeses, max_active, workload, .. } = run;
    let mut args: Vec<&str> = NODE_ARGS.to_vec();
    args.extend(settings.node_args.iter().map(String::as_str));
    let mut system = System::start(root, network, 3, &args).await?;
    // Dropped before the system: a fault left in force is undone while its nodes run.
    let mut schedule = Schedule::new(nemeses, max_active);
    let clients = Clients::new(recorder.clone(), system.endpoints(), &workload);
    let random = Random::new(settings.seed);
    let traffic = workload.start(&clients, &random).await?;
    let until = Instant::now() + settings.traffic;
    tracing::info!("--- clients and faults");
    let scheduled =
        schedule.run(&mut system, &mut random.fork(u64::MAX - 1), &recorder, until).await;
    let in_use = traffic.stop().await?;
    let report = scheduled?;
    recorder.note("clients stopped");

    tracing::info!("--- healed: every node serves a write and a read, every register is read");
    system.wait_converged().await.context("the cluster did not converge after healing")?;
    let closing_client = workload.clients;
    let (key, id) = in_use.first().context("registers in use")?;
    for (node, base) in system.endpoints().all() {
        let write = Call::Write { value: clients.unique_value() };
        let written = answered(&clients, closing_client, (*key, id), (node, &base), write).await?;
        // A refused write is a node that does not serve; a read's answer, whatever it
        // is, goes to the checker.
        if !matches!(written, Outcome::Written { .. } | Outcome::NotFound) {
            bail!("node {node} refused a write after healing: {written:?}");
        }
        answered(&clients, closing_client, (*key, id), (node, &base), Call::Read).await?;
    }
    let registers: Vec<(usize, String)> = recorder
        .snapshot()
        .keys
        .into_iter()
        .enumerate()
        .map(|(key, register)| (key, register.id))
        .collect();
    for (key, id) in &registers {
        for (node, base) in system.endpoints().all() {
            answered(&clients, closing_client, (*key, id), (node, &base), Call::Read).await?;
        }
    }
    Ok(report)
}

/// Sends `call` until it gets a definite answer (every attempt recorded); fails when
/// none comes within [`RECOVERY`]: the node does not serve.
async fn answered(
    clients: &Clients,
    client: usize,
    key: (usize, &str),
    node: (usize, &str),
    call: Call,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    loop {
        let outcome = clients.perform(client, key, node, call).await;
        if !outcome.is_indeterminate() && outcome != Outcome::Unsent {
            return Ok(outcome);
        }
        if started.elapsed() > RECOVERY {
            bail!(
                "node {} does not serve {call:?} on register {} after healing: {outcome:?}",
                node.0,
                key.0
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks every register of `history`, on as many threads as there are cores.
fn check_all(history: &History, budget: u64) -> Vec<KeyReport> {
    let threads = std::thread::available_parallelism().map_or(1, |count| count.get());
    let keys: Vec<usize> = (0..history.keys.len()).collect();
    let mut reports: Vec<KeyReport> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let keys = keys.iter().copied().skip(thread).step_by(threads);
                scope.spawn(move || {
                    keys.map(|key| check_key(history, key, budget)).collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|worker| worker.join().expect("a checker thread")).collect()
    });
    reports.sort_by_key(|report| report.key);
    reports
}

/// Returns "1234 operations (ok 800, 412 100, unknown 30, failed reads 20, refused 0)".
fn tally(history: &History) -> String {
    let count = |pick: &dyn Fn(&Call, &Outcome) -> bool| {
        history.ops.iter().filter(|op| pick(&op.call, &op.outcome)).count()
    };
    let ok = count(&|_, outcome| matches!(outcome, Outcome::Read { .. } | Outcome::Written { .. }));
    let mismatch = count(&|_, outcome| *outcome == Outcome::Mismatch);
    let unknown_writes = count(&|call, outcome| *call != Call::Read && outcome.is_indeterminate());
    let failed_reads = count(&|call, outcome| *call == Call::Read && outcome.is_indeterminate());
    let unsent = count(&|_, outcome| *outcome == Outcome::Unsent);
    let other = history.ops.len() - ok - mismatch - unknown_writes - failed_reads - unsent;
    format!(
        "{} operations (ok {ok}, 412 {mismatch}, writes of unknown outcome {unknown_writes}, reads unanswered {failed_reads}, not sent {unsent}, other {other})",
        history.ops.len()
    )
}

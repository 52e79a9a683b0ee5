//! The checker on hand-made register histories: the classic anomalies are refused, tricky
//! valid histories pass, and long random linearizable histories pass fast.

use super::*;
use crate::history::Register;
use crate::random::Random;

const BUDGET: u64 = 1_000_000;

/// A history of key 0, created as value 100 at version 1.
struct Builder(History);

impl Builder {
    fn new() -> Self {
        let key = Register { id: "k".repeat(32), value: 100, version: 1, created_ns: 0 };
        Self(History { keys: vec![key], ..History::default() })
    }

    fn op(mut self, client: usize, call: Call, outcome: Outcome, span: (u64, u64)) -> Self {
        let (invoked_ns, completed_ns) = span;
        self.0.ops.push(Operation {
            client,
            key: 0,
            node: 0,
            call,
            outcome,
            invoked_ns,
            completed_ns,
        });
        self
    }

    fn read(self, client: usize, value: u64, version: u64, span: (u64, u64)) -> Self {
        self.op(client, Call::Read, Outcome::Read { value: Some(value), version }, span)
    }

    fn write(self, client: usize, value: u64, version: u64, span: (u64, u64)) -> Self {
        self.op(client, Call::Write { value }, Outcome::Written { version }, span)
    }

    fn lost_write(self, client: usize, value: u64, span: (u64, u64)) -> Self {
        self.op(client, Call::Write { value }, unknown(), span)
    }

    fn cas(self, client: usize, from: u64, value: u64, outcome: Outcome, span: (u64, u64)) -> Self {
        self.op(client, Call::Cas { expected_version: from, value }, outcome, span)
    }

    fn check(&self) -> KeyReport {
        check_key(&self.0, 0, BUDGET)
    }
}

fn unknown() -> Outcome {
    Outcome::Indeterminate { reason: "timeout".into() }
}

fn written(version: u64) -> Outcome {
    Outcome::Written { version }
}

fn refuted(builder: &Builder) -> Box<linearizability::Counterexample<RegisterState>> {
    let report = builder.check();
    let text = report.explain(&builder.0);
    match report.verdict {
        Verdict::NotLinearizable(example) => {
            assert!(text.contains("NOT linearizable"), "{text}");
            example
        }
        other => panic!("expected a refutation, got {other:?}"),
    }
}

fn accepted(builder: &Builder) {
    let report = builder.check();
    assert_eq!(report.verdict, Verdict::Linearizable, "{}", report.explain(&builder.0));
}

#[test]
fn refuses_a_stale_read_after_a_completed_write() {
    let history = Builder::new().write(0, 1, 2, (0, 10)).read(1, 100, 1, (20, 30));
    let example = refuted(&history);
    // The write must go first, which would leave the read of the old state out.
    assert_eq!((example.stuck, example.behind), (0, Some(1)));
}

#[test]
fn refuses_a_lost_acknowledged_write() {
    // Write 1 was acknowledged at version 2; the final state says version 2 is write 2's:
    // write 1 is gone.
    let history =
        Builder::new().write(0, 1, 2, (0, 10)).lost_write(1, 2, (5, 15)).read(2, 2, 2, (50, 60));
    refuted(&history);
    // The same final state but with a version that counts both writes is fine.
    let history =
        Builder::new().write(0, 1, 2, (0, 10)).lost_write(1, 2, (5, 15)).read(2, 2, 3, (50, 60));
    accepted(&history);
}

#[test]
fn refuses_two_successful_compare_and_sets_from_one_version() {
    let history = Builder::new()
        .cas(0, 1, 7, written(2), (0, 10))
        .cas(1, 1, 8, written(2), (0, 10))
        .read(2, 8, 2, (20, 30));
    refuted(&history);
    let one_loses = Builder::new()
        .cas(0, 1, 7, written(2), (0, 10))
        .cas(1, 1, 8, Outcome::Mismatch, (0, 10))
        .read(2, 7, 2, (20, 30));
    accepted(&one_loses);
}

#[test]
fn refuses_a_read_of_a_value_never_written() {
    refuted(&Builder::new().write(0, 1, 2, (0, 10)).read(1, 555, 2, (20, 30)));
    let unreadable = Outcome::Read { value: None, version: 1 };
    refuted(&Builder::new().op(0, Call::Read, unreadable, (0, 10)));
    // A version no write produced is as wrong as a value.
    refuted(&Builder::new().write(0, 1, 2, (0, 10)).read(1, 1, 3, (20, 30)));
}

#[test]
fn refuses_a_read_that_goes_back_in_time_across_clients() {
    // Client 1 sees the unknown write; client 2, later, does not.
    let history =
        Builder::new().lost_write(0, 1, (0, 10)).read(1, 1, 2, (20, 30)).read(2, 100, 1, (40, 50));
    refuted(&history);
}

#[test]
fn refuses_a_412_at_the_expected_version_and_a_404() {
    refuted(&Builder::new().cas(0, 1, 7, Outcome::Mismatch, (0, 10)));
    refuted(&Builder::new().op(0, Call::Read, Outcome::NotFound, (0, 10)));
    refuted(&Builder::new().op(0, Call::Write { value: 3 }, Outcome::NotFound, (0, 10)));
}

#[test]
fn accepts_concurrent_overlapping_operations() {
    // Write 2 takes effect before write 1 although it started later.
    let history = Builder::new()
        .write(0, 1, 3, (0, 50))
        .write(1, 2, 2, (10, 60))
        .read(2, 2, 2, (20, 30))
        .read(2, 1, 3, (70, 80))
        .cas(3, 3, 4, written(4), (75, 90))
        .read(1, 1, 3, (76, 77))
        .read(0, 4, 4, (95, 99))
        // A 412 concurrent with the write that moved the version past it.
        .cas(0, 1, 5, Outcome::Mismatch, (0, 55));
    accepted(&history);
}

#[test]
fn accepts_unknown_writes_that_happened_or_did_not() {
    accepted(&Builder::new().lost_write(0, 1, (0, 10)).read(1, 1, 2, (50, 60)));
    accepted(&Builder::new().lost_write(0, 1, (0, 10)).read(1, 100, 1, (50, 60)));
    // One that took effect late, after a write that started after it answered.
    let late = Builder::new()
        .lost_write(0, 1, (0, 10))
        .write(0, 2, 2, (20, 30))
        .read(1, 2, 2, (40, 50))
        .read(1, 1, 3, (60, 70));
    accepted(&late);
    // Unknown compare-and-sets, one applied and one not.
    let cas = Builder::new()
        .cas(0, 1, 7, unknown(), (0, 10))
        .cas(1, 1, 8, unknown(), (0, 10))
        .read(2, 8, 2, (20, 30));
    accepted(&cas);
}

#[test]
fn many_unknown_writes_of_unread_values_are_cheap() {
    let mut history = Builder::new();
    for n in 0..300_u64 {
        history = history.lost_write(n as usize % 8, 1_000 + n, (n * 10, n * 10 + 5));
    }
    // 120 of the 300 took effect: only the count shows, through the version.
    let history = history.write(0, 5, 122, (5_000, 5_010)).read(1, 5, 122, (5_020, 5_030));
    let report = history.check();
    assert_eq!(report.verdict, Verdict::Linearizable, "{}", report.explain(&history.0));
    assert_eq!(report.indeterminate, 300);
    let too_many = history.read(1, 5, 400, (6_000, 6_010));
    refuted(&too_many);
}

#[test]
fn a_search_past_its_budget_is_unknown_never_linearizable() {
    let mut history = Builder::new();
    for n in 0..12 {
        history = history.write(n as usize, 1 + n, 2 + n, (0, 100));
    }
    let report = check_key(&history.0, 0, 5);
    assert!(matches!(report.verdict, Verdict::Unknown { .. }), "{:?}", report.verdict);
    assert!(!report.is_linearizable());
}

/// Simulates clients on a linearizable register: every operation takes effect at a
/// random point in its interval (or, with an unknown outcome, any time after its call,
/// or never), so the history is linearizable by construction.
fn simulated(random: &mut Random, clients: usize, ops: usize) -> History {
    struct Planned {
        op: Operation,
        effect_at: Option<u64>,
    }
    let mut planned = Vec::new();
    let mut clocks = vec![0_u64; clients];
    for value in (1_000..).take(ops) {
        let client = random.below(clients as u64) as usize;
        let invoked_ns = clocks[client] + random.in_range(0..=50);
        let completed_ns = invoked_ns + random.in_range(1..=400);
        let lost = random.chance(1, 8);
        let effect_at = if lost && random.chance(1, 3) {
            None
        } else if lost {
            Some(invoked_ns + random.in_range(0..=3_000))
        } else {
            Some(random.in_range(invoked_ns..=completed_ns))
        };
        let call = match random.below(4) {
            0 | 1 => Call::Read,
            2 => Call::Write { value },
            _ => Call::Cas { expected_version: 0, value },
        };
        let outcome = if lost { unknown() } else { Outcome::Failed { status: 0 } };
        let op = Operation { client, key: 0, node: 0, call, outcome, invoked_ns, completed_ns };
        planned.push(Planned { op, effect_at });
        clocks[client] = completed_ns;
    }
    let mut order: Vec<usize> =
        (0..planned.len()).filter(|i| planned[*i].effect_at.is_some()).collect();
    order.sort_by_key(|i| planned[*i].effect_at);
    let mut state = RegisterState { value: 100, version: 1 };
    for index in order {
        let Planned { op, .. } = &mut planned[index];
        let lost = op.outcome.is_indeterminate();
        match &mut op.call {
            Call::Read if lost => {}
            Call::Read => {
                op.outcome = Outcome::Read { value: Some(state.value), version: state.version };
            }
            Call::Write { value } => {
                state = RegisterState { value: *value, version: state.version + 1 };
                if !lost {
                    op.outcome = written(state.version);
                }
            }
            Call::Cas { expected_version, value } => {
                // Half of them expect the version they find, the others one before it.
                *expected_version = state.version - u64::from(random.chance(1, 2));
                if *expected_version == state.version {
                    state = RegisterState { value: *value, version: state.version + 1 };
                    if !lost {
                        op.outcome = written(state.version);
                    }
                } else if !lost {
                    op.outcome = Outcome::Mismatch;
                }
            }
        }
    }
    let key = Register { id: "k".repeat(32), value: 100, version: 1, created_ns: 0 };
    History { keys: vec![key], ops: planned.into_iter().map(|p| p.op).collect(), notes: vec![] }
}

#[test]
fn random_linearizable_histories_of_thousands_of_operations_pass_fast() {
    for seed in 0..4 {
        let mut random = Random::new(seed);
        let mut history = simulated(&mut random, 8, 3_000);
        let report = check_key(&history, 0, 20_000_000);
        assert!(report.is_linearizable(), "seed {seed}: {}", report.explain(&history));
        assert!(report.checked > 2_000, "seed {seed}: only {} checked", report.checked);
        assert!(report.elapsed < Duration::from_secs(20), "seed {seed}: {:?}", report.elapsed);

        // The last completed read, turned into one of the initial state: stale.
        let last_read = (0..history.ops.len())
            .filter(|i| matches!(history.ops[*i].outcome, Outcome::Read { .. }))
            .max_by_key(|i| history.ops[*i].invoked_ns)
            .unwrap();
        history.ops[last_read].outcome = Outcome::Read { value: Some(100), version: 1 };
        let report = check_key(&history, 0, 20_000_000);
        assert!(
            matches!(report.verdict, Verdict::NotLinearizable(_)),
            "seed {seed}: a stale last read passed: {:?}",
            report.verdict
        );
    }
}

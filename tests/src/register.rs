//! The session register as a sequential model, and the check of one key's recorded
//! history against it.
//!
//! State: the value and the version. A read must see both as they are; a write that
//! answered moves the version up by one to the version it was told; a compare-and-set
//! that answered does so only from its expected version; a 412 is allowed only at another
//! version; a 404 is never allowed (a register is never deleted). Writes and
//! compare-and-sets with unknown outcomes take their effect, if any, at any moment after
//! their call (see [`crate::linearizability`]).
//!
//! Values are unique, which the check uses twice. A write of unknown outcome whose value
//! some read returned did take effect, before the first such read returned: it is
//! checked as a write that must take effect by then. Values that no read returned are all
//! the same to the model: they are checked as one hidden value, which lets the search
//! merge the states they lead to, and lets unknown writes of hidden values be tried in
//! call order only.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::history::{Call, History, Operation, Outcome};
use crate::linearizability::{self, Entry, Model, Verdict};

/// The value of every write whose value no read returned.
pub const HIDDEN: u64 = u64::MAX;
/// What a read of `data` without a number `v` checks as: no state holds it.
const UNREADABLE: u64 = u64::MAX - 1;

/// The register's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegisterState {
    pub value: u64,
    pub version: u64,
}

/// What a compare-and-set was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CasResult {
    Written { version: u64 },
    Mismatch,
    Unknown,
}

/// One operation with its outcome, as the model checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterOp {
    Read {
        value: u64,
        version: u64,
    },
    /// `version`: what the write answered; `None` when it did not.
    Write {
        value: u64,
        version: Option<u64>,
    },
    Cas {
        expected: u64,
        value: u64,
        result: CasResult,
    },
    /// An answer no state explains (a 404).
    Impossible,
}

/// The sequential specification of the session register.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegisterModel;

impl Model for RegisterModel {
    type State = RegisterState;
    type Op = RegisterOp;

    fn step(&self, state: &RegisterState, op: &RegisterOp) -> Option<RegisterState> {
        let next = |value| RegisterState { value, version: state.version + 1 };
        match *op {
            RegisterOp::Read { value, version } => {
                (state.value == value && state.version == version).then_some(*state)
            }
            RegisterOp::Write { value, version: Some(version) } => {
                (version == state.version + 1).then(|| next(value))
            }
            RegisterOp::Write { value, version: None } => Some(next(value)),
            RegisterOp::Cas { expected, value, result } => match result {
                CasResult::Written { version } => {
                    (state.version == expected && version == expected + 1).then(|| next(value))
                }
                CasResult::Mismatch => (state.version != expected).then_some(*state),
                CasResult::Unknown if state.version == expected => Some(next(value)),
                CasResult::Unknown => Some(*state),
            },
            RegisterOp::Impossible => None,
        }
    }

    fn progress(&self, state: &RegisterState) -> u64 {
        state.version
    }

    fn latest(&self, op: &RegisterOp) -> Option<u64> {
        match *op {
            RegisterOp::Read { version, .. } => Some(version),
            RegisterOp::Write { version: Some(version), .. } => Some(version.saturating_sub(1)),
            RegisterOp::Cas { expected, result: CasResult::Written { .. }, .. } => Some(expected),
            _ => None,
        }
    }
}

/// The check of one key: what was checked and what the checker found.
#[derive(Debug, Clone)]
pub struct KeyReport {
    pub key: usize,
    /// Operations the checker placed (failed reads and refused writes have no effect and
    /// are left out).
    pub checked: usize,
    /// Of those, the ones with unknown outcomes.
    pub indeterminate: usize,
    pub verdict: Verdict<RegisterState>,
    /// Per checked entry, its index in [`History::ops`].
    pub origin: Vec<usize>,
    pub elapsed: Duration,
}

/// Checks the operations on `key` of `history`, with at most `budget` search steps.
pub fn check_key(history: &History, key: usize, budget: u64) -> KeyReport {
    let started = Instant::now();
    let register = &history.keys[key];
    let on_key: Vec<(usize, &Operation)> =
        history.ops.iter().enumerate().filter(|(_, op)| op.key == key).collect();
    // Per value read, when the first read of it returned: a write of unknown outcome
    // whose value was read took effect, and before then.
    let mut first_read: HashMap<u64, u64> = HashMap::from([(register.value, 0)]);
    for (_, op) in &on_key {
        if let (Call::Read, Outcome::Read { value: Some(value), .. }) = (op.call, &op.outcome) {
            let at = first_read.entry(*value).or_insert(op.completed_ns);
            *at = (*at).min(op.completed_ns);
        }
    }
    let shown = |value: u64| if first_read.contains_key(&value) { value } else { HIDDEN };
    let mut classes: HashMap<RegisterOp, u32> = HashMap::new();
    let mut entries = Vec::new();
    let mut origin = Vec::new();
    for (index, op) in on_key {
        let Some(mut checked) = model_op(op, shown) else { continue };
        let mut ret = (!op.outcome.is_indeterminate()).then_some(op.completed_ns);
        if let (None, Call::Write { value } | Call::Cas { value, .. }) = (ret, op.call) {
            if let Some(read_at) = first_read.get(&value) {
                ret = Some((*read_at).max(op.invoked_ns));
                if let RegisterOp::Cas { expected, result, .. } = &mut checked {
                    *result = CasResult::Written { version: *expected + 1 };
                }
            }
        }
        let interchangeable = ret.is_none()
            && matches!(
                checked,
                RegisterOp::Write { value: HIDDEN, .. } | RegisterOp::Cas { value: HIDDEN, .. }
            );
        let next_class = classes.len() as u32;
        let class = interchangeable.then(|| *classes.entry(checked).or_insert(next_class));
        entries.push(Entry { op: checked, call: op.invoked_ns, ret, class });
        origin.push(index);
    }
    let init = RegisterState { value: register.value, version: register.version };
    let verdict = linearizability::check(&RegisterModel, init, &entries, budget);
    KeyReport {
        key,
        checked: entries.len(),
        indeterminate: entries.iter().filter(|entry| entry.ret.is_none()).count(),
        verdict,
        origin,
        elapsed: started.elapsed(),
    }
}

/// Returns what the model checks `op` as, or `None` when it tells nothing (a read that
/// failed) or did nothing (a write refused with a 4xx, or never sent).
fn model_op(op: &Operation, shown: impl Fn(u64) -> u64) -> Option<RegisterOp> {
    let checked = match (op.call, &op.outcome) {
        (_, Outcome::NotFound) => RegisterOp::Impossible,
        (Call::Read, Outcome::Read { value, version }) => {
            RegisterOp::Read { value: value.unwrap_or(UNREADABLE), version: *version }
        }
        (Call::Write { value }, Outcome::Written { version }) => {
            RegisterOp::Write { value: shown(value), version: Some(*version) }
        }
        (Call::Write { value }, Outcome::Indeterminate { .. }) => {
            RegisterOp::Write { value: shown(value), version: None }
        }
        (Call::Cas { expected_version, value }, outcome) => {
            let result = match outcome {
                Outcome::Written { version } => CasResult::Written { version: *version },
                Outcome::Mismatch => CasResult::Mismatch,
                Outcome::Indeterminate { .. } => CasResult::Unknown,
                _ => return None,
            };
            RegisterOp::Cas { expected: expected_version, value: shown(value), result }
        }
        _ => return None,
    };
    Some(checked)
}

impl KeyReport {
    /// Returns whether the history of this key is linearizable (not merely unrefuted).
    pub fn is_linearizable(&self) -> bool {
        self.verdict == Verdict::Linearizable
    }

    /// Returns a description of the failure for people: the deepest attempt's last
    /// operations and state, the operation that could not take effect, the operations
    /// concurrent with it, and the notes (faults) around it.
    pub fn explain(&self, history: &History) -> String {
        let register = &history.keys[self.key];
        let mut text = format!("key {} (session {}): ", self.key, register.id);
        let example = match &self.verdict {
            Verdict::Linearizable => return text + "linearizable",
            Verdict::Unknown { steps } => {
                return text + &format!("unknown: the search gave up after {steps} steps")
            }
            Verdict::NotLinearizable(example) => example,
        };
        let op_at = |entry: usize| &history.ops[self.origin[entry]];
        let line = |entry: usize| describe(self.origin[entry], op_at(entry));
        let _ = writeln!(
            text,
            "NOT linearizable; created as value {} version {}",
            register.value, register.version
        );
        let _ = writeln!(
            text,
            "deepest attempt linearized {} of {} operations, the last ones:",
            example.linearized.len(),
            self.checked
        );
        for entry in &example.linearized[example.linearized.len().saturating_sub(8)..] {
            let _ = writeln!(text, "  {}", line(*entry));
        }
        let state = example.state;
        let value =
            if state.value == HIDDEN { "(unread)".to_string() } else { state.value.to_string() };
        let _ = writeln!(text, "leaving value {value} version {}", state.version);
        let _ = writeln!(text, "then this operation could take effect in no order:");
        let _ = writeln!(text, "  {}", line(example.stuck));
        if let Some(behind) = example.behind {
            let _ = writeln!(text, "as taking it there would leave this one out for good:");
            let _ = writeln!(text, "  {}", line(behind));
        }
        let stuck = op_at(example.stuck);
        let end = if stuck.outcome.is_indeterminate() { u64::MAX } else { stuck.completed_ns };
        let _ = writeln!(text, "operations on the key concurrent with it (at most 40):");
        let concurrent = self.origin.iter().enumerate().filter(|(entry, index)| {
            let op = &history.ops[**index];
            let op_end = if op.outcome.is_indeterminate() { u64::MAX } else { op.completed_ns };
            *entry != example.stuck && op.invoked_ns <= end && stuck.invoked_ns <= op_end
        });
        for (entry, index) in concurrent.take(40) {
            let mark = if example.linearized.contains(&entry) { "linearized" } else { "pending" };
            let _ = writeln!(text, "  {} ({mark})", describe(*index, &history.ops[*index]));
        }
        let _ = writeln!(text, "notes within 5 s before it:");
        for note in &history.notes {
            if note.at_ns + 5_000_000_000 >= stuck.invoked_ns && note.at_ns <= stuck.completed_ns {
                let _ = writeln!(text, "  {:>10.3}s {}", seconds(note.at_ns), note.text);
            }
        }
        text
    }
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Returns one line for operation `index`: client, node, interval, call and outcome.
pub fn describe(index: usize, op: &Operation) -> String {
    let call = match op.call {
        Call::Read => "read".to_string(),
        Call::Write { value } => format!("write {value}"),
        Call::Cas { expected_version, value } => format!("cas v{expected_version} -> {value}"),
    };
    let outcome = match &op.outcome {
        Outcome::Read { value: Some(value), version } => format!("value {value} v{version}"),
        Outcome::Read { value: None, version } => format!("unreadable data v{version}"),
        Outcome::Written { version } => format!("ok v{version}"),
        Outcome::NotFound => "404".to_string(),
        Outcome::Mismatch => "412".to_string(),
        Outcome::Failed { status } => format!("refused {status}"),
        Outcome::Unsent => "not sent (no connection)".to_string(),
        Outcome::Indeterminate { reason } => format!("unknown ({reason})"),
    };
    format!(
        "op {index} client {} node {} [{:.6}s, {:.6}s] {call} => {outcome}",
        op.client,
        op.node,
        seconds(op.invoked_ns),
        seconds(op.completed_ns)
    )
}

#[cfg(test)]
#[path = "register_tests.rs"]
mod tests;

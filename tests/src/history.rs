//! Recorded histories of operations on session registers: what each client asked, what
//! it was told, and when (monotonic nanoseconds since the run began), as the
//! linearizability checker needs them.
//!
//! The register is one session whose `data` is `{"v": <value>}`: a read returns the
//! value and the session's `version`; a write (`PUT`) replaces the value; a
//! compare-and-set (`PATCH` with `If-Match`) replaces it only at the expected version.
//! Every value a run writes is unique, so that every successful write changes `data`
//! and so the version (a write of equal data would keep it).

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What a client asked of a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// `GET /api/sessions/{id}`.
    Read,
    /// `PUT /api/sessions/{id}` with `{"data":{"v": value}}`.
    Write { value: u64 },
    /// `PATCH /api/sessions/{id}` with `If-Match: "<expected_version>"` and `{"v": value}`.
    Cas { expected_version: u64, value: u64 },
}

/// What the client was told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A read answered 200; `value` is `None` when `data` held no number `v`.
    Read { value: Option<u64>, version: u64 },
    /// A write or compare-and-set answered 200: the session is at `version` now.
    Written { version: u64 },
    /// 404: the session was not there.
    NotFound,
    /// 412: the compare-and-set found another version and changed nothing.
    Mismatch,
    /// Another 4xx: refused, nothing changed.
    Failed { status: u16 },
    /// No connection could be made, so the request was never sent: nothing changed.
    Unsent,
    /// No answer, a 5xx or an unreadable body: a write may or may not have taken effect
    /// (and still may); a read told nothing.
    Indeterminate { reason: String },
}

impl Outcome {
    /// Returns whether the operation may have changed the register without the client
    /// knowing: its effect, if any, can fall anywhere after its invocation.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Outcome::Indeterminate { .. })
    }
}

/// One operation of one client on one register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub client: usize,
    /// Index into [`History::keys`].
    pub key: usize,
    /// Index of the node the request went to.
    pub node: usize,
    pub call: Call,
    pub outcome: Outcome,
    /// When the request was about to be sent.
    pub invoked_ns: u64,
    /// When its answer (or failure) was in.
    pub completed_ns: u64,
}

/// A register as its creation left it: the state before any recorded operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// The session id.
    pub id: String,
    pub value: u64,
    pub version: u64,
    pub created_ns: u64,
}

/// Something the run did that is not an operation (a fault injected or healed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub at_ns: u64,
    pub text: String,
}

/// Everything recorded in one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub keys: Vec<Register>,
    pub ops: Vec<Operation>,
    pub notes: Vec<Note>,
}

/// One line of a saved history.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Key(Register),
    Op(Operation),
    Note(Note),
}

impl History {
    /// Returns the operations on key `key`, in the order they were recorded.
    pub fn ops_on(&self, key: usize) -> Vec<&Operation> {
        self.ops.iter().filter(|op| op.key == key).collect()
    }

    /// Writes the history as JSON lines (keys, then operations, then notes).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let lines = (self.keys.iter().cloned().map(Line::Key))
            .chain(self.ops.iter().cloned().map(Line::Op))
            .chain(self.notes.iter().cloned().map(Line::Note));
        for line in lines {
            serde_json::to_writer(&mut file, &line)?;
            file.write_all(b"\n")?;
        }
        file.flush()?;
        Ok(())
    }

    /// Reads a history [`History::save`] wrote.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut history = Self::default();
        for line in std::io::BufReader::new(std::fs::File::open(path)?).lines() {
            match serde_json::from_str(&line?)? {
                Line::Key(key) => history.keys.push(key),
                Line::Op(op) => history.ops.push(op),
                Line::Note(note) => history.notes.push(note),
            }
        }
        Ok(history)
    }
}

/// Collects a history from many clients at once, with times from one monotonic clock.
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    history: Mutex<History>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self { started: Instant::now(), history: Mutex::default() }
    }
}

impl Recorder {
    /// Returns the nanoseconds since the recorder was made.
    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a register created with `value` at `version`; returns its key index.
    pub fn add_key(&self, id: String, value: u64, version: u64) -> usize {
        let created_ns = self.now_ns();
        let mut history = self.history();
        history.keys.push(Register { id, value, version, created_ns });
        history.keys.len() - 1
    }

    /// Adds a completed operation.
    pub fn record(&self, op: Operation) {
        self.history().ops.push(op);
    }

    /// Adds a note (a fault injected or healed) at the current time.
    pub fn note(&self, text: impl Into<String>) {
        let at_ns = self.now_ns();
        self.history().notes.push(Note { at_ns, text: text.into() });
    }

    /// Returns a copy of everything recorded so far.
    pub fn snapshot(&self) -> History {
        self.history().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_history_loads_back_equal() {
        let recorder = Recorder::default();
        let key = recorder.add_key("a".repeat(32), 7, 1);
        recorder.record(Operation {
            client: 0,
            key,
            node: 2,
            call: Call::Cas { expected_version: 1, value: 9 },
            outcome: Outcome::Indeterminate { reason: "timeout".into() },
            invoked_ns: 5,
            completed_ns: 9,
        });
        recorder.note("kill node 1");
        let history = recorder.snapshot();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        history.save(&path).unwrap();
        assert_eq!(History::load(&path).unwrap(), history);
    }
}

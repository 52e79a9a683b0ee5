//! Format fixtures: every kind of bytes shoal writes to disk or sends to another node,
//! one sample each, as a release wrote them (`tests/fixtures/formats/<release>/`).
//!
//! The test (`shoal_storage::fixtures::check_releases`) decodes every checked-in fixture
//! of every release with this build and
//! requires that re-encoding it at the fixture's level gives the same bytes, and that
//! the sample this build makes encodes to them too: so a later build both reads what
//! older ones wrote and still writes what they read, at their level (the rule is in
//! `docs/formats.md`). A new sample (a new command, record or body kind) needs a
//! fixture: `SHOAL_WRITE_FIXTURES=1 cargo test -p shoal-raft fixtures` writes the
//! missing ones into this release's directory and never overwrites one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use openraft::error::{Fatal, Infallible, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    CommittedLeaderId, EntryPayload, LogId, Membership, SnapshotMeta, SnapshotSegmentId,
    StoredMembership, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_storage::codec;
use shoal_storage::fixtures::{self, Sample};

use crate::cluster::MembershipChange;
use crate::error::ClusterError;
use crate::network::Identity;
use crate::once::Remembered;
use crate::state_machine::StoredSnapshot;
use crate::types::{BlobCommand, BlobMeta, BlobRecord};
use crate::types::{
    Command, Entry, Node, NodeId, Rejection, Request, Response, SessionChange, SessionRecord,
    TypeConfig,
};
use crate::types::{ExpireCondition, KvCommand, KvRecord, KvReply, SetCondition, Ttl};
use crate::types::{PartState, ProgressCommand, ProgressRecord, ProgressStatus, ProgressUpdate};

fn sample<T: Serialize + DeserializeOwned + 'static>(name: &str, value: T) -> Sample {
    fixtures::postcard(name, value)
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn membership() -> Membership<NodeId, Node> {
    let nodes: BTreeMap<NodeId, Node> =
        (1..=4).map(|id| (id, Node::new(format!("10.0.0.{id}:8000")))).collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

fn stored_membership() -> StoredMembership<NodeId, Node> {
    StoredMembership::new(Some(log_id(2, 7)), membership())
}

fn snapshot_meta() -> SnapshotMeta<NodeId, Node> {
    SnapshotMeta {
        last_log_id: Some(log_id(3, 120)),
        last_membership: stored_membership(),
        snapshot_id: "3-120-1764741600000".to_string(),
    }
}

fn session_record() -> SessionRecord {
    SessionRecord {
        data: r#"{"user":"ana","cart":[1,2]}"#.to_string(),
        version: 3,
        ttl_ms: 3_600_000,
        created_at_ms: 1_764_741_600_000,
        expires_at_ms: 1_764_745_200_000,
    }
}

fn progress_record() -> ProgressRecord {
    ProgressRecord {
        kind: "search".to_string(),
        params: r#"{"ufs":["SP","RJ"],"date_from":"2026-01-01"}"#.to_string(),
        status: ProgressStatus::Running,
        owner: 2,
        attempt: 1,
        created_at_ms: 1_764_741_600_000,
        updated_at_ms: 1_764_741_601_000,
        total_parts: 2,
        parts: vec![
            PartState {
                name: "SP".to_string(),
                status: ProgressStatus::Completed,
                pages: 4,
                records: 180,
            },
            PartState {
                name: "RJ".to_string(),
                status: ProgressStatus::Queued,
                pages: 0,
                records: 0,
            },
        ],
        result: None,
        error: Some("none yet".to_string()),
        last_seq: 9,
        ttl_ms: 300_000,
        expires_at_ms: 1_764_745_201_000,
    }
}

fn blob_meta() -> BlobMeta {
    BlobMeta {
        name: "search-SP-RJ.xlsx".to_string(),
        content_type: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            .to_string(),
        size: 300_000,
        chunks: 2,
    }
}

/// Every command kind, each as it is proposed.
fn commands() -> Vec<(&'static str, Command)> {
    let id = "5f0c8a3e1b2d4c6f8a9b0c1d2e3f4a5b".to_string();
    vec![
        (
            "create-session",
            Command::CreateSession { id: id.clone(), data: r#"{"a":1}"#.into(), ttl_ms: 60_000 },
        ),
        (
            "update-session-replace",
            Command::UpdateSession {
                id: id.clone(),
                change: SessionChange::Replace(r#"{"a":2}"#.into()),
                if_version: Some(1),
                max_data_bytes: 65_536,
            },
        ),
        (
            "update-session-merge-patch",
            Command::UpdateSession {
                id: id.clone(),
                change: SessionChange::MergePatch(r#"{"b":null}"#.into()),
                if_version: None,
                max_data_bytes: 65_536,
            },
        ),
        ("delete-session", Command::DeleteSession { id: id.clone(), if_version: Some(4) }),
        ("touch", Command::Touch { ids: vec![id.clone(), "other".into()] }),
        ("expire", Command::Expire),
        (
            "progress-create",
            Command::Progress(ProgressCommand::Create {
                id: id.clone(),
                record: progress_record(),
            }),
        ),
        (
            "progress-started",
            Command::Progress(ProgressCommand::Update {
                id: id.clone(),
                attempt: 1,
                seq: 1,
                update: ProgressUpdate::Started,
            }),
        ),
        (
            "progress-part-completed",
            Command::Progress(ProgressCommand::Update {
                id: id.clone(),
                attempt: 1,
                seq: 5,
                update: ProgressUpdate::PartCompleted { part: "SP".into(), pages: 4, records: 180 },
            }),
        ),
        (
            "progress-finished",
            Command::Progress(ProgressCommand::Update {
                id: id.clone(),
                attempt: 2,
                seq: 12,
                update: ProgressUpdate::Finished {
                    status: ProgressStatus::Completed,
                    result: Some(r#"{"records":180}"#.into()),
                    error: None,
                },
            }),
        ),
        (
            "progress-takeover",
            Command::Progress(ProgressCommand::Takeover { id: id.clone(), attempt: 1, owner: 3 }),
        ),
        (
            "blob-chunk",
            Command::Blob(BlobCommand::Chunk {
                id: id.clone(),
                index: 0,
                bytes: vec![0x50, 0x4b, 3, 4, 0, 255],
                ttl_ms: 3_600_000,
            }),
        ),
        ("blob-commit", Command::Blob(BlobCommand::Commit { id: id.clone(), meta: blob_meta() })),
        (
            "batch",
            Command::Batch(vec![
                Command::Touch { ids: vec![id.clone()] },
                Command::DeleteSession { id: "gone".into(), if_version: None },
            ]),
        ),
        (
            "once",
            Command::Once {
                key: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
                deadline_ms: 1_764_741_660_000,
                command: Box::new(Command::CreateSession { id, data: "{}".into(), ttl_ms: 60_000 }),
            },
        ),
        (
            "kv-set",
            Command::Kv(KvCommand::Set {
                key: b"session:ab\xff".to_vec(),
                value: b"\x80\x04pickled".to_vec(),
                ttl: Ttl::In(60_000),
                condition: SetCondition::IfAbsent,
                get: true,
            }),
        ),
        (
            "kv-set-many",
            Command::Kv(KvCommand::SetMany {
                pairs: vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())],
                only_new: true,
            }),
        ),
        ("kv-delete", Command::Kv(KvCommand::Delete { keys: vec![b"a".to_vec(), b"b".to_vec()] })),
        ("kv-take", Command::Kv(KvCommand::Take { key: b"a".to_vec() })),
        (
            "kv-expire",
            Command::Kv(KvCommand::Expire {
                key: b"a".to_vec(),
                ttl: Ttl::At(1_764_741_700_000),
                condition: ExpireCondition::IfLater,
                get: false,
            }),
        ),
        ("kv-incr-by", Command::Kv(KvCommand::IncrBy { key: b"n".to_vec(), by: -3 })),
        (
            "kv-append",
            Command::Kv(KvCommand::Append { key: b"log".to_vec(), value: b"line".to_vec() }),
        ),
    ]
}

/// Every rejection, each as the state machine answers it.
fn rejections() -> Vec<(&'static str, Rejection)> {
    vec![
        ("not-found", Rejection::NotFound),
        ("already-exists", Rejection::AlreadyExists),
        ("version-mismatch", Rejection::VersionMismatch { current: 7 }),
        ("too-large", Rejection::TooLarge { size: 70_000, limit: 65_536 }),
        ("not-an-object", Rejection::NotAnObject),
        ("progress-not-found", Rejection::ProgressNotFound),
        ("progress-finished", Rejection::ProgressFinished),
        ("stale-attempt", Rejection::StaleAttempt { current: 2 }),
        ("unknown-part", Rejection::UnknownPart),
        ("blob-not-pending", Rejection::BlobNotPending),
        ("request-expired", Rejection::RequestExpired),
        ("not-an-integer", Rejection::NotAnInteger),
        ("overflow", Rejection::Overflow),
    ]
}

/// Every answer kind of the state machine.
fn responses() -> Vec<(&'static str, Response)> {
    let id = "5f0c8a3e1b2d4c6f8a9b0c1d2e3f4a5b".to_string();
    vec![
        ("empty", Response::Empty),
        ("session", Response::Session { id: id.clone(), record: session_record() }),
        ("deleted", Response::Deleted),
        ("count", Response::Count(12)),
        ("progress", Response::Progress { id, record: progress_record() }),
        ("rejected", Response::Rejected(Rejection::VersionMismatch { current: 2 })),
        ("batch", Response::Batch(vec![Response::Deleted, Response::Count(1)])),
        (
            "kv-written",
            Response::Kv(KvReply::Written { written: true, previous: Some(b"old".to_vec()) }),
        ),
        ("kv-count", Response::Kv(KvReply::Count(2))),
        ("kv-value", Response::Kv(KvReply::Value(Some(b"v".to_vec())))),
        ("kv-integer", Response::Kv(KvReply::Integer(-3))),
    ]
}

/// Every error a node sends another one.
fn cluster_errors() -> Vec<(&'static str, ClusterError)> {
    vec![
        ("no-leader", ClusterError::NoLeader),
        (
            "not-leader",
            ClusterError::NotLeader { leader_id: 3, leader_addr: "10.0.0.3:8000".into() },
        ),
        ("unreachable", ClusterError::Unreachable("node 3 did not answer".into())),
        ("membership", ClusterError::Membership("a change is in progress".into())),
        ("timeout", ClusterError::Timeout(Duration::from_millis(5_250))),
        ("rejected", ClusterError::Rejected(Rejection::AlreadyExists)),
        ("storage", ClusterError::Storage("disk full".into())),
        ("raft", ClusterError::Raft("raft stopped".into())),
        ("unavailable", ClusterError::Unavailable("redis is down".into())),
        ("no-quorum", ClusterError::NoQuorum),
        ("damaged", ClusterError::Damaged("state.redb: checksum mismatch".into())),
    ]
}

fn membership_changes() -> Vec<(&'static str, MembershipChange)> {
    vec![
        ("add-learner", MembershipChange::AddLearner { node_id: 4, addr: "10.0.0.4:8000".into() }),
        ("promote", MembershipChange::Promote { node_ids: BTreeSet::from([4, 5]) }),
        ("remove", MembershipChange::Remove { node_id: 2 }),
        ("replace", MembershipChange::Replace { old: 2, new: 6 }),
        ("leave", MembershipChange::Leave { node_id: 3, keep_voters: 3 }),
        ("set-address", MembershipChange::SetAddress { node_id: 1, addr: "10.0.0.9:8000".into() }),
    ]
}

fn entry(payload: EntryPayload<TypeConfig>) -> Entry {
    Entry { log_id: log_id(3, 121), payload }
}

/// Every sample, named `<group>/<kind>`.
fn samples() -> Vec<Sample> {
    let request = |command: Command| Request { now_ms: 1_764_741_600_123, command };
    let mut all = Vec::new();

    // The Raft log: entries as each node keeps them (and sends them in appends).
    all.push(sample("log-entry/blank", entry(EntryPayload::Blank)));
    all.push(sample("log-entry/membership", entry(EntryPayload::Membership(membership()))));
    for (name, command) in commands() {
        let name = &format!("log-entry/{name}");
        all.push(sample(name, entry(EntryPayload::Normal(request(command)))));
    }
    // The log store's own records: its meta (vote and last purged) and commit hint.
    all.push(sample("log-meta/meta", (Some(Vote::new_committed(3, 1)), Some(log_id(2, 99)))));
    all.push(sample("log-meta/commit-hint", Some(log_id(3, 121))));

    // The state machine's records.
    all.push(sample("record/session", session_record()));
    all.push(sample("record/progress", progress_record()));
    all.push(sample("record/blob-pending", BlobRecord { meta: None, expires_at_ms: 17 }));
    all.push(sample(
        "record/blob-committed",
        BlobRecord { meta: Some(blob_meta()), expires_at_ms: 1_764_745_200_000 },
    ));
    all.push(sample("record/once-session", Remembered::Session { version: 3 }));
    for (name, response) in responses() {
        all.push(sample(&format!("record/once-answer-{name}"), Remembered::Answer(response)));
    }
    all.push(sample("record/last-applied", Some(log_id(3, 121))));
    all.push(sample("record/membership", stored_membership()));
    all.push(sample("record/num-sessions", 42_u64));
    all.push(sample("record/num-kv", 7_u64));
    all.push(sample("record/clock", 1_764_741_600_123_u64));
    all.push(sample(
        "record/kv",
        KvRecord { value: b"\x00binary".to_vec(), expires_at_ms: Some(1_764_745_200_000) },
    ));
    all.push(sample(
        "record/kv-persistent",
        KvRecord { value: b"v".to_vec(), expires_at_ms: None },
    ));

    // Snapshots: the kept snapshot (meta, and pairs while installing) and its data.
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"s/abc".to_vec(), codec::encode(&session_record())),
        (b"p/def".to_vec(), codec::encode(&progress_record())),
    ];
    all.push(sample("snapshot/data", pairs.clone()));
    all.push(sample(
        "snapshot/stored",
        StoredSnapshot { meta: snapshot_meta(), data: codec::encode(&pairs) },
    ));

    // Internal RPC bodies: requests and answers between nodes.
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id(3, 120)),
        entries: vec![entry(EntryPayload::Normal(request(Command::Expire)))],
        leader_commit: Some(log_id(3, 119)),
    };
    all.push(sample("rpc/append-request", append));
    type RaftResult<T, E = Infallible> = Result<T, RaftError<NodeId, E>>;
    let answers: Vec<(&str, RaftResult<AppendEntriesResponse<NodeId>>)> = vec![
        ("success", Ok(AppendEntriesResponse::Success)),
        ("partial-success", Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(3, 120))))),
        ("conflict", Ok(AppendEntriesResponse::Conflict)),
        ("higher-vote", Ok(AppendEntriesResponse::HigherVote(Vote::new(4, 2)))),
        ("fatal", Err(RaftError::Fatal(Fatal::Stopped))),
    ];
    for (name, answer) in answers {
        all.push(sample(&format!("rpc/append-answer-{name}"), answer));
    }
    all.push(sample(
        "rpc/vote-request",
        VoteRequest { vote: Vote::new(4, 2), last_log_id: Some(log_id(3, 121)) },
    ));
    let vote: RaftResult<VoteResponse<NodeId>> = Ok(VoteResponse {
        vote: Vote::new(4, 2),
        vote_granted: true,
        last_log_id: Some(log_id(3, 121)),
    });
    all.push(sample("rpc/vote-answer", vote));
    all.push(sample(
        "rpc/snapshot-request",
        InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            meta: snapshot_meta(),
            offset: 0,
            data: vec![1, 2, 3],
            done: false,
        },
    ));
    let installed: RaftResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> =
        Ok(InstallSnapshotResponse { vote: Vote::new_committed(3, 1) });
    all.push(sample("rpc/snapshot-answer", installed));
    let mismatch: RaftResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> =
        Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
            expect: SnapshotSegmentId { id: "3-120".into(), offset: 0 },
            got: SnapshotSegmentId { id: "3-120".into(), offset: 3 },
        })));
    all.push(sample("rpc/snapshot-answer-mismatch", mismatch));
    for (name, command) in commands() {
        all.push(sample(&format!("rpc/forward-{name}"), command));
    }
    // The commands of release 0.1.0's first fixture; later kinds have their own.
    let first_kinds = commands().into_iter().filter(|(name, _)| !name.starts_with("kv-"));
    all.push(sample("rpc/forward-batch-request", first_kinds.map(|(_, c)| c).collect::<Vec<_>>()));
    let kv_kinds = commands().into_iter().filter(|(name, _)| name.starts_with("kv-"));
    all.push(sample("rpc/forward-batch-request-kv", kv_kinds.map(|(_, c)| c).collect::<Vec<_>>()));
    for (name, response) in responses() {
        let answer: crate::Result<Response> = Ok(response);
        all.push(sample(&format!("rpc/forward-answer-{name}"), answer));
    }
    for (name, error) in cluster_errors() {
        let answer: crate::Result<Response> = Err(error);
        all.push(sample(&format!("rpc/forward-error-{name}"), answer));
    }
    for (name, rejection) in rejections() {
        let answer: crate::Result<Response> = Err(ClusterError::Rejected(rejection));
        all.push(sample(&format!("rpc/forward-rejected-{name}"), answer));
    }
    let batch: crate::Result<Vec<crate::Result<Response>>> =
        Ok(vec![Ok(Response::Deleted), Err(ClusterError::NoLeader)]);
    all.push(sample("rpc/forward-batch-answer", batch));
    for (name, change) in membership_changes() {
        all.push(sample(&format!("rpc/membership-{name}"), change));
    }
    let changed: crate::Result<()> = Ok(());
    all.push(sample("rpc/membership-answer", changed));
    let read_index: crate::Result<Option<u64>> = Ok(Some(121));
    all.push(sample("rpc/read-index-answer", read_index));
    // Identity and read-index requests carry no value.
    all.push(sample("rpc/empty-request", ()));
    all.push(sample("rpc/identity-answer", Identity { node_id: 2 }));
    all
}

#[test]
fn every_release_fixture_decodes_and_this_build_writes_it_again() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats");
    fixtures::check_releases(&dir, env!("CARGO_PKG_VERSION"), "bin", &samples());
}

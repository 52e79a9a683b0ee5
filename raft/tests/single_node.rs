//! A one-member cluster on a real sled engine: writes, expiry, snapshots, log purge,
//! and recovery after a restart on the same data.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_raft::{
    unix_millis, Cluster, ClusterError, ClusterOptions, ClusterSecret, Command, InternalClient,
    Node, Rejection, Response, SessionChange,
};
use shoal_storage::{Engine, SledEngine};

fn options() -> ClusterOptions {
    ClusterOptions {
        node_id: 1,
        advertise_addr: "127.0.0.1:1".to_string(),
        heartbeat_interval: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(150), Duration::from_millis(300)),
        snapshot_after_logs: 50,
        logs_kept_after_snapshot: 10,
        request_timeout: Duration::from_secs(5),
        read_lease: Some(Duration::from_millis(75)),
        client: InternalClient::new(ClusterSecret::random(), Duration::from_secs(1)),
    }
}

async fn start(path: &Path) -> (Cluster, Arc<dyn Engine>) {
    // A previous cluster on the same path releases sled's file lock once its background
    // tasks have seen the shutdown; wait for that rather than fail.
    let started = Instant::now();
    let engine: Arc<dyn Engine> = loop {
        match SledEngine::open(&path.join("db")) {
            Ok(engine) => break Arc::new(engine),
            Err(error) if started.elapsed() < Duration::from_secs(10) => {
                tracing::debug!(%error, "database still locked");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("cannot reopen the database: {error}"),
        }
    };
    let cluster = Cluster::start(engine.clone(), &path.join("raft-log"), options()).await.unwrap();
    if !cluster.is_initialized().await.unwrap() {
        let members = BTreeMap::from([(1, Node { addr: "127.0.0.1:1".to_string() })]);
        cluster.initialize(members).await.unwrap();
    }
    cluster.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    (cluster, engine)
}

fn create(id: &str, ttl_ms: u64) -> Command {
    Command::CreateSession { id: id.to_string(), data: r#"{"n":0}"#.to_string(), ttl_ms }
}

async fn wait_until(what: &str, deadline: Duration, mut predicate: impl FnMut() -> bool) {
    let started = Instant::now();
    while !predicate() {
        assert!(started.elapsed() < deadline, "timed out after {deadline:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_purge_the_log_and_state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, engine) = start(dir.path()).await;
    for n in 0..200 {
        cluster.write(create(&format!("s{n:03}"), 3_600_000)).await.unwrap();
    }
    let patch = SessionChange::MergePatch(r#"{"n":7,"extra":true}"#.to_string());
    let update = Command::UpdateSession {
        id: "s007".into(),
        change: patch,
        if_version: Some(1),
        max_data_bytes: 1024,
    };
    let Response::Session { record, .. } = cluster.write(update).await.unwrap() else { panic!() };
    assert_eq!((record.version, record.data.as_str()), (2, r#"{"extra":true,"n":7}"#));

    wait_until("a snapshot is built and the log purged", Duration::from_secs(10), || {
        let status = cluster.status();
        status.snapshot_index.is_some() && status.purged_index.is_some()
    })
    .await;
    let before = cluster.status();
    assert!(before.purged_index.unwrap() >= 50, "{before:?}");
    cluster.shutdown().await;
    drop(cluster);
    engine.flush().unwrap();
    drop(engine);

    let (cluster, _engine) = start(dir.path()).await;
    let reader = cluster.reader();
    assert_eq!(reader.num_sessions(), 200);
    let record = reader.session("s007", unix_millis()).unwrap().expect("s007 survives restart");
    assert_eq!(record.version, 2);
    assert!(reader.session("s199", unix_millis()).unwrap().is_some());
    assert!(cluster.status().last_applied_index >= before.last_applied_index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_change_nothing_and_expiry_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, _engine) = start(dir.path()).await;
    cluster.write(create("a", 3_600_000)).await.unwrap();
    let stale = Command::DeleteSession { id: "a".into(), if_version: Some(9) };
    let error = cluster.write(stale).await.unwrap_err();
    assert!(
        matches!(error, ClusterError::Rejected(Rejection::VersionMismatch { current: 1 })),
        "{error}"
    );
    let too_big = Command::UpdateSession {
        id: "a".into(),
        change: SessionChange::Replace(format!(r#"{{"x":"{}"}}"#, "y".repeat(100))),
        if_version: None,
        max_data_bytes: 64,
    };
    assert!(matches!(
        cluster.write(too_big).await.unwrap_err(),
        ClusterError::Rejected(Rejection::TooLarge { .. })
    ));
    let duplicate = cluster.write(create("a", 1)).await.unwrap_err();
    assert!(matches!(duplicate, ClusterError::Rejected(Rejection::AlreadyExists)));
    let record = cluster.reader().session("a", unix_millis()).unwrap().unwrap();
    assert_eq!((record.version, record.data.as_str()), (1, r#"{"n":0}"#));

    cluster.write(create("short", 200)).await.unwrap();
    assert_eq!(cluster.reader().num_sessions(), 2);
    tokio::time::sleep(Duration::from_millis(250)).await;
    // Hidden from reads at once, by the local clock…
    assert!(cluster.reader().session("short", unix_millis()).unwrap().is_none());
    // …and removed from the state by a replicated Expire carrying the leader's clock.
    let Response::Count(expired) = cluster.write(Command::Expire).await.unwrap() else { panic!() };
    assert_eq!(expired, 1);
    assert_eq!(cluster.reader().num_sessions(), 1);
    // Next due: the kept answers of the writes above (`once.rs`), well before the session.
    let next = cluster.reader().next_deadline_ms().unwrap().unwrap();
    assert!(next < record.expires_at_ms && next > unix_millis(), "{next}");

    let touch = Command::Touch { ids: vec!["a".into(), "a".into(), "missing".into()] };
    let Response::Count(touched) = cluster.write(touch).await.unwrap() else { panic!() };
    assert_eq!(touched, 1);
    let touched_record = cluster.reader().session("a", unix_millis()).unwrap().unwrap();
    assert!(touched_record.expires_at_ms > record.expires_at_ms);
    assert_eq!(touched_record.version, 1, "a touch is not a change of data");

    let same = Command::UpdateSession {
        id: "a".into(),
        change: SessionChange::MergePatch("{}".into()),
        if_version: Some(1),
        max_data_bytes: 64,
    };
    let Response::Session { record, .. } = cluster.write(same).await.unwrap() else { panic!() };
    assert_eq!(record.version, 1, "an empty merge patch is not a change");
}

/// A keyed write proposed again (as after a leader change) or replayed finds the answer
/// of its first application and changes nothing; past its deadline it is refused; and
/// the answers are forgotten by the replicated expiry once their deadline passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_write_applies_at_most_once() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, _engine) = start(dir.path()).await;
    cluster.write(create("a", 3_600_000)).await.unwrap();
    let replace = |data: &str| Command::UpdateSession {
        id: "a".into(),
        change: SessionChange::Replace(data.into()),
        if_version: None,
        max_data_bytes: 1_000,
    };
    let deadline_ms = unix_millis() + 1_000;
    let keyed = |key: u128, data: &str| Command::Once {
        key,
        deadline_ms,
        command: Box::new(replace(data)),
    };
    let Response::Session { record: first, .. } =
        cluster.write(keyed(1, r#"{"v":1}"#)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(first.version, 2);
    // The same write again: the first answer, and nothing applies twice.
    let Response::Session { record: again, .. } =
        cluster.write(keyed(1, r#"{"v":1}"#)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!((again.version, again.data.as_str()), (2, r#"{"v":1}"#));
    // After a later write the first answer is gone: a copy is told its outcome cannot be
    // known, and the later write stands.
    cluster.write(replace(r#"{"v":"later"}"#)).await.unwrap();
    let superseded = cluster.write(keyed(1, r#"{"v":1}"#)).await.unwrap_err();
    assert!(
        matches!(superseded, ClusterError::Rejected(Rejection::RequestExpired)),
        "{superseded}"
    );
    let now = cluster.reader().session("a", unix_millis()).unwrap().unwrap();
    assert_eq!((now.version, now.data.as_str()), (3, r#"{"v":"later"}"#));

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let late = cluster.write(keyed(2, r#"{"v":2}"#)).await.unwrap_err();
    assert!(matches!(late, ClusterError::Rejected(Rejection::RequestExpired)), "{late}");
    let Response::Count(forgotten) = cluster.write(Command::Expire).await.unwrap() else {
        panic!()
    };
    assert!(forgotten >= 1, "the answer past its deadline is forgotten");
    let now = cluster.reader().session("a", unix_millis()).unwrap().unwrap();
    assert_eq!(now.version, 3, "nothing late applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_read_barriers_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, _engine) = start(dir.path()).await;
    let barriers: Vec<_> = (0..200)
        .map(|_| {
            let cluster = cluster.clone();
            tokio::spawn(async move { cluster.read_barrier().await })
        })
        .collect();
    for barrier in barriers {
        barrier.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_are_chunked_readable_and_expire() {
    use shoal_raft::{ClusterBlobStore, CHUNK_BYTES};
    use shoal_storage::{Blob, BlobStore};

    let dir = tempfile::tempdir().unwrap();
    let (cluster, _engine) = start(dir.path()).await;
    let store = ClusterBlobStore::new(cluster.clone());
    let bytes: Vec<u8> = (0..CHUNK_BYTES * 2 + 17).map(|n| (n % 251) as u8).collect();
    let blob = Blob { name: "r.xlsx".into(), content_type: "application/x".into(), bytes };
    store.put("r1", blob.clone(), Duration::from_millis(300)).await.unwrap();
    assert_eq!(store.get("r1").await.unwrap(), Some(blob.clone()));
    assert_eq!(store.get("nope").await.unwrap(), None);
    let duplicate = store.put("r1", blob.clone(), Duration::from_secs(60)).await;
    assert!(duplicate.is_err(), "a live blob is never overwritten");

    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(store.get("r1").await.unwrap(), None, "hidden once expired");
    let Response::Count(expired) = cluster.write(Command::Expire).await.unwrap() else { panic!() };
    assert_eq!(expired, 1);
    store.put("r1", blob.clone(), Duration::from_secs(60)).await.unwrap();
    assert_eq!(store.get("r1").await.unwrap(), Some(blob), "the id is free again after expiry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_records_follow_their_milestones_and_expire() {
    use shoal_raft::{
        PartState, ProgressCommand, ProgressRecord, ProgressStatus, ProgressUpdate, Rejection,
    };

    let dir = tempfile::tempdir().unwrap();
    let (cluster, _engine) = start(dir.path()).await;
    let part = |name: &str| PartState {
        name: name.into(),
        status: ProgressStatus::Queued,
        pages: 0,
        records: 0,
    };
    let record = ProgressRecord {
        kind: "search".into(),
        params: "{}".into(),
        status: ProgressStatus::Queued,
        owner: 1,
        attempt: 1,
        created_at_ms: 0,
        updated_at_ms: 0,
        total_parts: 2,
        parts: vec![part("SP"), part("RJ")],
        result: None,
        error: None,
        last_seq: 0,
        ttl_ms: 300,
        expires_at_ms: 0,
    };
    let update = |seq, attempt, update| {
        Command::Progress(ProgressCommand::Update { id: "s1".into(), attempt, seq, update })
    };
    cluster
        .write(Command::Progress(ProgressCommand::Create { id: "s1".into(), record }))
        .await
        .unwrap();
    let completed = ProgressUpdate::PartCompleted { part: "SP".into(), pages: 2, records: 7 };
    let Response::Progress { record, .. } = cluster.write(update(3, 1, completed)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (record.status, record.completed_parts(), record.last_seq),
        (ProgressStatus::Running, 1, 3)
    );

    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        cluster.reader().progress("s1", unix_millis()).unwrap().is_some(),
        "an unfinished record outlives its TTL, which counts from its end"
    );

    let stale = update(4, 2, ProgressUpdate::Started);
    assert!(matches!(
        cluster.write(stale).await.unwrap_err(),
        ClusterError::Rejected(Rejection::StaleAttempt { current: 1 })
    ));
    let unknown =
        update(4, 1, ProgressUpdate::PartCompleted { part: "XX".into(), pages: 1, records: 1 });
    assert!(matches!(
        cluster.write(unknown).await.unwrap_err(),
        ClusterError::Rejected(Rejection::UnknownPart)
    ));
    let finished =
        ProgressUpdate::Finished { status: ProgressStatus::Cancelled, result: None, error: None };
    let Response::Progress { record, .. } = cluster.write(update(5, 1, finished)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(
        record.parts[1].status,
        ProgressStatus::Cancelled,
        "unfinished parts end with the search"
    );
    assert_eq!(record.parts[0].status, ProgressStatus::Completed);
    let late = update(6, 1, ProgressUpdate::Started);
    assert!(matches!(
        cluster.write(late).await.unwrap_err(),
        ClusterError::Rejected(Rejection::ProgressFinished)
    ));

    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        cluster.reader().progress("s1", unix_millis()).unwrap().is_none(),
        "hidden after its TTL"
    );
    let Response::Count(expired) = cluster.write(Command::Expire).await.unwrap() else { panic!() };
    assert_eq!(expired, 1);
}

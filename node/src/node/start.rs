//! How a node starts, step by step: claim the data dir, bind, learn who this node is,
//! open storage, start Raft and join or form a cluster, connect the state store, then the
//! services (reports, searches, gossip, the event fabric) and their background loops.
//! Each step reads the part of [`Config`] it needs and hands the next what it made.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal_raft::{
    spawn_maintenance, Cluster, ClusterBlobStore, ClusterError, ClusterOptions, ClusterSecret,
    InternalClient, Node as RaftNode, NodeId, Toucher,
};
use shoal_storage::{
    BlobStore, Engine, RedbEngine, Redis, RedisBlobStore, RedisMessage, S3BlobStore, SledEngine,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{Node, Services};
use crate::api::{AppState, NodeContext};
use crate::config::{Config, RaftConfig, SearchConfig, StorageConfig, StorageEngine};
use crate::data_dir;
use crate::discovery;
use crate::fabric::redis_feed::RedisFeed;
use crate::fabric::{ClusterFabric, Fabric, RedisFabric};
use crate::gossip::membership::{raft_state, MembershipSettings};
use crate::gossip::{
    self, Gossip, GossipSettings, KEY_API_ADDR, KEY_INSTANCE_ID, KEY_RAFT, KEY_REPLACES,
};
use crate::jobs::{self, PncpClient, SearchSettings, Searches, Sources, WorkerPool};
use crate::leave::Leave;
use crate::reports::{DownloadSigner, Reports, S3Reports};
use crate::resp;
use crate::sse::Hub;
use crate::store::{ClusterStore, RedisKeys, RedisStore, Store};

/// How long a new single-node cluster may take to elect itself at start.
const FIRST_ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts a node from `config` (see [`Node::start`]).
pub(super) async fn start(mut config: Config) -> anyhow::Result<Node> {
    let slot = claim_slot(&mut config)?;
    let started_ms = shoal_raft::unix_millis();
    let http = http_settings(&config);
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!("cannot listen on {} (is another node running there?)", config.listen)
    })?;
    let identity = Identity::establish(&config, listener.local_addr()?).await?;
    let engine = open_engine(&config.storage, &config.data_dir, &identity.engine_path).await?;
    let secret = match &config.cluster_secret {
        Some(secret) => ClusterSecret::new(secret.as_bytes().to_vec()),
        // A node alone: nobody else may call its internal endpoints.
        None => ClusterSecret::random(),
    };
    let cluster =
        start_raft(&config.raft, &config.data_dir, &identity, engine.clone(), &secret).await?;
    let bootstrap_expect = join_or_form(&config, &identity, &cluster).await?;

    let toucher = Toucher::default();
    let (stop_maintenance, stopped) = watch::channel(false);
    let mut background = vec![spawn_maintenance(
        cluster.clone(),
        toucher.clone(),
        config.raft.maintenance_interval,
        stopped,
    )];
    let backend = StateBackend::connect(&config, &cluster, &toucher).await?;
    let mode = backend.store.mode().as_str();
    tracing::info!(
        instance_id = %identity.instance_id,
        node_id = identity.node_id,
        mode,
        data_dir = %config.data_dir.display(),
        addr = %identity.local_addr,
        advertise_addr = %identity.advertise_addr,
        version = env!("CARGO_PKG_VERSION"),
        "shoal node started [mode: {mode}]"
    );
    let reports = reports(&config, &identity, &secret, &backend, &cluster, &stop_maintenance)
        .await
        .map(|(reports, sweep)| {
            background.extend(sweep);
            Arc::new(reports)
        })?;
    let gossip = start_gossip(&config, &identity, &cluster, &secret, started_ms).await?;
    let bus = Arc::new(resp::pubsub::LocalBus::default());
    let pubsub = Arc::new(resp::pubsub::PubSub::new(
        bus.clone(),
        identity.node_id,
        cluster.client().clone(),
        gossip.clone(),
    ));
    let hub = Arc::new(match &backend.feed {
        Some(feed) => Hub::with_sink(feed.sink()),
        // Redis clients of any node see this node's events on the classic channels.
        None => Hub::with_sink(resp::classic_events(
            pubsub.clone(),
            resp::Classic::new(&config.key_prefix),
        )),
    });
    let searches = searches(&config.searches, &backend.store, identity.node_id, &hub, &reports)?;
    if let (Some(feed), Some(messages)) = (&backend.feed, backend.messages) {
        feed.serve(hub.clone(), searches.clone(), messages).await?;
    }
    if let Some(resp_config) = &config.resp {
        let listener = resp::bind(resp_config).await?;
        let addr = listener.local_addr()?;
        let resp = Arc::new(resp::Resp::new(
            resp_config.clone(),
            cluster.clone(),
            pubsub.clone(),
            identity.instance_id.clone(),
            addr.port(),
        ));
        tracing::info!(%addr, "serving the Redis protocol (RESP)");
        background.push(tokio::spawn(resp::watch_format_levels(
            resp.clone(),
            gossip.clone(),
            stop_maintenance.subscribe(),
        )));
        background.push(tokio::spawn(resp::serve(listener, resp, stop_maintenance.subscribe())));
    }
    let loops = Loops { cluster: &cluster, gossip: &gossip, searches: &searches, hub: &hub };
    background.extend(loops.spawn(
        &config,
        &identity,
        &backend.store,
        bootstrap_expect,
        started_ms,
        &stop_maintenance,
    ));

    let events: Fabric = match backend.feed {
        Some(feed) => Arc::new(RedisFabric { feed, hub: hub.clone() }),
        None => Arc::new(ClusterFabric {
            cluster: cluster.clone(),
            gossip: gossip.clone(),
            hub: hub.clone(),
            store: backend.store.clone(),
            request_timeout: config.raft.request_timeout,
        }),
    };
    let leave = config.membership.leave_on_shutdown.then(|| Leave {
        cluster: cluster.clone(),
        gossip: gossip.clone(),
        keep_voters: bootstrap_expect,
    });
    let state = AppState(Arc::new(NodeContext {
        cluster,
        store: backend.store,
        events,
        config,
        instance_id: identity.instance_id,
        metrics: crate::metrics::recorder(),
        hub,
        searches,
        reports,
        secret,
        started_ms,
        gossip: gossip.clone(),
        bus,
    }));
    let services = Services { state, engine, background, gossip, stop_maintenance, _slot: slot };
    Ok(Node { listener, http, services, leave })
}

/// Takes a slot of a shared data dir (`--shared-data-dir`), which becomes this node's.
fn claim_slot(config: &mut Config) -> anyhow::Result<Option<data_dir::Slot>> {
    if !config.storage.shared_data_dir {
        return Ok(None);
    }
    let slot = data_dir::claim_slot(&config.data_dir)?;
    tracing::info!(slot = %slot.path.display(), "took a slot of the shared data dir");
    config.data_dir = slot.path.clone();
    Ok(Some(slot))
}

/// How the server treats connections: the edge flags, and a cap from the open-file
/// limit unless `--max-connections` sets one.
fn http_settings(config: &Config) -> crate::http::Settings {
    let open_files = crate::http::raise_open_file_limit();
    let max_connections = config
        .edge
        .max_connections
        .or_else(|| open_files.map(crate::http::default_max_connections).filter(|max| *max > 0));
    tracing::info!(
        max_connections = max_connections.filter(|max| *max > 0),
        header_read_timeout = ?config.edge.header_read_timeout,
        idle_timeout = ?config.edge.idle_timeout,
        "client connections: at most {}",
        max_connections.filter(|max| *max > 0).map_or("any number".to_string(), |max| max.to_string())
    );
    crate::http::Settings {
        timeouts: crate::http::Timeouts {
            header_read: config.edge.header_read_timeout,
            idle: config.edge.idle_timeout,
        },
        max_connections,
        drain: crate::http::DRAIN,
        fast_streams: config.edge.sse_fast_path,
    }
}

/// Who this node is: its ids, where it is reached, and its peers.
struct Identity {
    node_id: NodeId,
    instance_id: String,
    /// The member whose place this node takes (after `shoal reset-replica`).
    replaces: Option<NodeId>,
    local_addr: SocketAddr,
    advertise_addr: String,
    /// `--peers` but this node.
    peers: Vec<String>,
    /// The addresses `--peers` resolved to.
    peer_addrs: Vec<SocketAddr>,
    engine_path: PathBuf,
}

impl Identity {
    /// Prepares the data dir and reads or makes this node's ids there; resolves the
    /// peers and the address to advertise.
    async fn establish(config: &Config, local_addr: SocketAddr) -> anyhow::Result<Self> {
        if data_dir::left(&config.data_dir) {
            tracing::info!("this node left its cluster before it stopped: forgetting its replica");
            data_dir::forget_replica(&config.data_dir)?;
        }
        let engine_path = data_dir::prepare(&config.data_dir, config.storage.engine)?;
        let node_id = data_dir::node_id(&config.data_dir, config.node_id)?;
        let replaces = data_dir::replaces(&config.data_dir)?;
        if replaces == Some(node_id) {
            anyhow::bail!(
                "this data dir was reset (shoal reset-replica) to rejoin as a new member, but \
                 --node-id names the member it replaces ({node_id}): give it a new --node-id"
            );
        }
        let instance_id = config.instance_id.clone().unwrap_or_else(|| format!("shoal-{node_id}"));
        let peer_addrs =
            discovery::resolve_peers(&config.membership.peers, discovery::NAMES_WAIT).await;
        let advertise_addr = match &config.advertise_addr {
            Some(addr) => addr.clone(),
            None => discovery::advertised_addr(local_addr, &peer_addrs).await,
        };
        let peers = config
            .membership
            .peers
            .iter()
            .filter(|peer| **peer != advertise_addr)
            .cloned()
            .collect();
        Ok(Self {
            node_id,
            instance_id,
            replaces,
            local_addr,
            advertise_addr,
            peers,
            peer_addrs,
            engine_path,
        })
    }
}

/// Opens the storage engine of the data dir.
async fn open_engine(
    config: &StorageConfig,
    data_dir: &Path,
    engine_path: &Path,
) -> anyhow::Result<Arc<dyn Engine>> {
    let path = engine_path.to_path_buf();
    let cache_bytes = config.cache_bytes;
    let kind = config.engine;
    let engine = tokio::task::spawn_blocking(move || match kind {
        StorageEngine::Sled => SledEngine::open_with_cache(&path, cache_bytes)
            .map(|engine| Arc::new(engine) as Arc<dyn Engine>),
        StorageEngine::Redb => RedbEngine::open_with_cache(&path, cache_bytes)
            .map(|engine| Arc::new(engine) as Arc<dyn Engine>),
    })
    .await?
    .with_context(|| {
        format!(
            "cannot open the database in {} (is another node using this data dir? if \
             the file is damaged, rebuild this replica from its cluster with \
             `shoal reset-replica --data-dir {}`, then start the node as before)",
            engine_path.display(),
            data_dir.display()
        )
    })?;
    Ok(engine)
}

/// Starts Raft on `engine` and the data dir's log.
async fn start_raft(
    config: &RaftConfig,
    data_dir: &Path,
    identity: &Identity,
    engine: Arc<dyn Engine>,
    secret: &ClusterSecret,
) -> anyhow::Result<Cluster> {
    let connect_timeout = config.heartbeat_interval.max(Duration::from_millis(200));
    let client = InternalClient::new(secret.clone(), connect_timeout);
    let options = ClusterOptions {
        node_id: identity.node_id,
        advertise_addr: identity.advertise_addr.clone(),
        heartbeat_interval: config.heartbeat_interval,
        election_timeout: (config.election_timeout, config.election_timeout * 2),
        snapshot_after_logs: config.snapshot_logs,
        logs_kept_after_snapshot: config.snapshot_logs.min(200),
        request_timeout: config.request_timeout,
        read_lease: config.read_lease.then_some(config.election_timeout / 2),
        client,
    };
    let log_dir = data_dir::raft_log(data_dir);
    Cluster::start(engine, &log_dir, options).await.map_err(|error| match error {
        ClusterError::Damaged(damage) => anyhow::anyhow!(
            "{damage}\nTo rebuild this replica: `shoal reset-replica --data-dir {}` with \
             the node stopped, then start it as before.",
            data_dir.display()
        ),
        other => anyhow::Error::new(other).context("cannot start raft"),
    })
}

/// Recovers the cluster of the data dir, forms a single-node one, or waits to form or
/// join one with the peers (gossip's membership loop does that); returns how many nodes
/// form the cluster (`--bootstrap-expect`).
async fn join_or_form(
    config: &Config,
    identity: &Identity,
    cluster: &Cluster,
) -> anyhow::Result<usize> {
    let (node_id, peers) = (identity.node_id, &identity.peers);
    let bootstrap_expect = config
        .membership
        .bootstrap_expect
        .unwrap_or_else(|| peers.iter().collect::<BTreeSet<_>>().len() + 1);
    if config.membership.bootstrap_expect.is_none() && identity.peer_addrs.len() > peers.len() + 1 {
        tracing::warn!(
            bootstrap_expect,
            addresses = identity.peer_addrs.len(),
            "--peers names resolve to more nodes than they are names: set \
             --bootstrap-expect to the number of nodes that form the cluster"
        );
    }
    let initialized = cluster.is_initialized().await?;
    if let (Some(old), false, true) = (identity.replaces, initialized, peers.is_empty()) {
        anyhow::bail!(
            "this data dir was reset (shoal reset-replica) to rejoin its cluster in place \
             of node {old}, but no --peers names that cluster; start it with --peers. (A \
             single node has no other copy: to start it empty instead, delete {})",
            config.data_dir.join("replaces_node").display()
        );
    }
    if initialized {
        tracing::info!(node_id, "recovered raft state from the data dir");
    } else if peers.is_empty() && bootstrap_expect <= 1 {
        let addr = identity.advertise_addr.clone();
        let members = BTreeMap::from([(node_id, RaftNode { addr })]);
        cluster.initialize(members).await.context("cannot initialize a single-node cluster")?;
        tracing::info!(node_id, "initialized a new single-node cluster");
        cluster
            .wait_for_leader(FIRST_ELECTION_TIMEOUT)
            .await
            .context("no raft leader was elected")?;
    } else {
        tracing::info!(
            node_id,
            bootstrap_expect,
            peers = ?peers,
            "waiting to form a cluster with the peers, or to be added to theirs"
        );
    }
    Ok(bootstrap_expect)
}

/// Where sessions and progress records live, and in Redis mode its pub/sub feed.
struct StateBackend {
    store: Store,
    redis: Option<RedisStore>,
    feed: Option<Arc<RedisFeed>>,
    messages: Option<mpsc::UnboundedReceiver<RedisMessage>>,
}

impl StateBackend {
    /// Connects the state store: the cluster, or the Redis of compatibility mode.
    async fn connect(
        config: &Config,
        cluster: &Cluster,
        toucher: &Toucher,
    ) -> anyhow::Result<Self> {
        let Some(redis_config) = &config.redis else {
            let store = Arc::new(ClusterStore::new(cluster.clone(), toucher.clone()));
            return Ok(Self { store, redis: None, feed: None, messages: None });
        };
        let (redis, messages) = Redis::connect(&redis_config.url).await.with_context(|| {
            "cannot connect to Redis (check REDIS_URL, and that redis-server runs)"
        })?;
        redis.ping().await.context("Redis does not answer PING")?;
        tracing::info!(addr = %redis.addr(), "redis connected: {}", redis.addr());
        let keys = RedisKeys { prefix: redis_config.prefix.clone() };
        let state = RedisStore { redis, keys };
        let feed = RedisFeed::start(state.clone());
        let store = Arc::new(state.clone());
        Ok(Self { store, redis: Some(state), feed: Some(feed), messages: Some(messages) })
    }
}

/// Makes the report store: blobs in the cluster or in Redis, links signed with a key
/// every node shares, and S3 when configured (with its sweeper, returned to run).
async fn reports(
    config: &Config,
    identity: &Identity,
    secret: &ClusterSecret,
    backend: &StateBackend,
    cluster: &Cluster,
    stop: &watch::Sender<bool>,
) -> anyhow::Result<(Reports, Option<JoinHandle<()>>)> {
    // Every node of a cluster (or of one Redis) has the same key, so links work on any node.
    let signing_key = match (&config.cluster_secret, &backend.redis) {
        (Some(_), _) => secret.derive("download links"),
        (None, Some(redis)) => shared_signing_key(redis).await?,
        (None, None) => data_dir::signing_key(&config.data_dir)?,
    };
    let signer = DownloadSigner::new(signing_key);
    let blob_store: Arc<dyn BlobStore> = match &backend.redis {
        Some(redis) => Arc::new(RedisBlobStore::new(redis.redis.clone(), &redis.keys.prefix)),
        None => Arc::new(ClusterBlobStore::new(cluster.clone())),
    };
    let instance_id = identity.instance_id.clone();
    let reports = Reports::new(blob_store, signer, config.report_ttl, instance_id);
    let Some(s3) = &config.s3 else { return Ok((reports, None)) };
    let settings = &s3.settings;
    let s3_store = S3BlobStore::new(settings.clone()).context("invalid S3 settings")?;
    tracing::info!(bucket = %settings.bucket, endpoint = ?settings.endpoint, "reports go to S3 bucket {}", settings.bucket);
    let sweep = tokio::spawn(sweep_s3(
        s3_store.clone(),
        config.report_ttl,
        s3.sweep_interval,
        stop.subscribe(),
    ));
    let reports = reports.with_s3(S3Reports { store: s3_store, url_ttl: settings.url_ttl });
    Ok((reports, Some(sweep)))
}

/// Makes the search runner: its worker pool and sources.
fn searches(
    config: &SearchConfig,
    store: &Store,
    node_id: NodeId,
    hub: &Arc<Hub>,
    reports: &Arc<Reports>,
) -> anyhow::Result<Arc<Searches>> {
    let pool = WorkerPool::new(config.workers, config.queue_capacity);
    let file = match &config.source_file {
        Some(path) => {
            let notices = jobs::load_source_file(path)?;
            tracing::info!(path = %path.display(), notices = notices.len(), "loaded the file source");
            Some(Arc::new(notices))
        }
        None => None,
    };
    let pncp = PncpClient::new(
        &config.pncp_url,
        config.pncp_modalities.clone(),
        config.pncp_concurrency,
        config.pncp_backoff,
    );
    let sources = Sources { sample_page_delay: config.sample_page_delay, file, pncp };
    let settings = SearchSettings { progress_ttl: config.progress_ttl, sources };
    let (store, hub, reports) = (store.clone(), hub.clone(), reports.clone());
    Ok(Arc::new(Searches::new(store, node_id, hub, pool, reports, settings)))
}

/// Starts gossip with this node's keys.
async fn start_gossip(
    config: &Config,
    identity: &Identity,
    cluster: &Cluster,
    secret: &ClusterSecret,
    started_ms: u64,
) -> anyhow::Result<Arc<Gossip>> {
    let gossip_port = config.membership.gossip_port.unwrap_or(identity.local_addr.port());
    let seeds = identity
        .peers
        .iter()
        .map(|peer| {
            let (host, port) = peer.rsplit_once(':').expect("validated host:port");
            format!(
                "{host}:{}",
                config.membership.gossip_port.map_or(port.to_string(), |p| p.to_string())
            )
        })
        .collect();
    let settings = GossipSettings {
        node_id: identity.node_id,
        listen: SocketAddr::new(identity.local_addr.ip(), gossip_port),
        advertise: resolve(&identity.advertise_addr, gossip_port).await?,
        seeds,
        interval: config.membership.gossip_interval,
        secret: secret.clone(),
        started_ms,
    };
    let keys = vec![
        (KEY_API_ADDR.to_string(), identity.advertise_addr.clone()),
        (KEY_INSTANCE_ID.to_string(), identity.instance_id.clone()),
        // A restarted node says at once that it belongs to a cluster, so that no fresh
        // node counts it as one to bootstrap with.
        (KEY_RAFT.to_string(), raft_state(&cluster.status()).to_string()),
        (
            KEY_REPLACES.to_string(),
            identity.replaces.map_or_else(String::new, |old| old.to_string()),
        ),
        (gossip::KEY_READ_LEVEL.to_string(), shoal_storage::codec::READ_LEVEL.to_string()),
        (gossip::KEY_RESP.to_string(), if config.resp.is_some() { "1" } else { "0" }.to_string()),
    ];
    Ok(Arc::new(Gossip::start(settings, keys).await?))
}

/// What the background loops work on.
struct Loops<'a> {
    cluster: &'a Cluster,
    gossip: &'a Arc<Gossip>,
    searches: &'a Arc<Searches>,
    hub: &'a Arc<Hub>,
}

impl Loops<'_> {
    /// Spawns the membership, takeover and topic-sweep loops, which stop with `stop`.
    fn spawn(
        self,
        config: &Config,
        identity: &Identity,
        store: &Store,
        bootstrap_expect: usize,
        started_ms: u64,
        stop: &watch::Sender<bool>,
    ) -> Vec<JoinHandle<()>> {
        let load = {
            let searches = self.searches.clone();
            move || {
                let pool = searches.pool_stats();
                pool.active + pool.queued
            }
        };
        let membership = tokio::spawn(gossip::membership::run(
            self.cluster.clone(),
            self.gossip.clone(),
            load,
            MembershipSettings {
                bootstrap_expect,
                max_voters: config.membership.max_voters,
                dead_node_timeout: config.membership.dead_node_timeout,
                interval: config.membership.gossip_interval,
                caught_up_lag: 100,
                replaces: identity.replaces.map(|old| (old, config.data_dir.clone())),
            },
            stop.subscribe(),
        ));
        let takeover = tokio::spawn(jobs::takeover::run(
            self.searches.clone(),
            self.cluster.clone(),
            self.gossip.clone(),
            config.membership.gossip_interval.max(Duration::from_millis(200)),
            started_ms,
            stop.subscribe(),
        ));
        // Expired records' topics go within a tenth of the TTL (at most 30 s) after them.
        let sweep_interval = (config.searches.progress_ttl / 10)
            .max(config.raft.maintenance_interval)
            .min(Duration::from_secs(30));
        let sweep = tokio::spawn(crate::sse::sweep::run(
            self.hub.clone(),
            store.clone(),
            sweep_interval,
            stop.subscribe(),
        ));
        vec![membership, takeover, sweep]
    }
}
/// Returns the download-link key shared by every node of one Redis: made once by the
/// first node, kept in Redis.
async fn shared_signing_key(redis: &RedisStore) -> anyhow::Result<[u8; 32]> {
    let key = format!("{}:signing-key", redis.keys.prefix);
    let fresh = shoal_raft::auth::hex(&rand::random::<[u8; 32]>());
    let stored = redis
        .redis
        .get_or_set(&key, fresh.as_bytes())
        .await
        .context("cannot read the download-link key from Redis")?;
    let text = String::from_utf8(stored).context("the download-link key in Redis is not text")?;
    shoal_raft::auth::unhex(&text).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()).with_context(
        || format!("{key} in Redis is not 64 hex digits; delete it and restart the nodes"),
    )
}

/// Deletes expired reports from the bucket every `interval` (object stores such as
/// Supabase Storage have no lifecycle rules).
async fn sweep_s3(
    store: S3BlobStore,
    ttl: Duration,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.wait_for(|stopped| *stopped) => return,
        }
        match store.delete_expired(ttl).await {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::info!(deleted, bucket = store.bucket(), "deleted expired reports from S3")
            }
            Err(error) => tracing::warn!(%error, "deleting expired reports from S3 failed"),
        }
    }
}

/// Resolves `host:port`'s host, with `port` instead.
async fn resolve(host_port: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let (host, _) = host_port.rsplit_once(':').context("an address is host:port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} resolves to no address"))
}

//! [`Node`]: opens storage, starts Raft, serves the API, and shuts down cleanly.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use shoal_raft::{
    spawn_maintenance, Cluster, ClusterBlobStore, ClusterError, ClusterOptions, ClusterSecret,
    InternalClient, Node as RaftNode, Toucher,
};
use shoal_storage::{
    BlobStore, Engine, RedbEngine, Redis, RedisBlobStore, S3BlobStore, SledEngine,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing_subscriber::EnvFilter;

use crate::api::{self, AppState, NodeContext};
use crate::config::{Config, LogFormat, StorageEngine};
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
use crate::sse::Hub;
use crate::store::{ClusterStore, RedisKeys, RedisStore, Store};

/// How long a new single-node cluster may take to elect itself at start.
const FIRST_ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// A started node: storage open, Raft running, listener bound, not yet serving.
#[derive(Debug)]
pub struct Node {
    listener: TcpListener,
    http: crate::http::Settings,
    services: Services,
    /// Set with `--leave-on-shutdown`: how this node leaves its cluster when it stops.
    leave: Option<Leave>,
}

/// Everything of a node but its listener.
#[derive(Debug)]
struct Services {
    state: AppState,
    engine: Arc<dyn Engine>,
    /// Maintenance, membership and takeover loops; they stop with `stop_maintenance`.
    background: Vec<JoinHandle<()>>,
    gossip: Arc<Gossip>,
    stop_maintenance: watch::Sender<bool>,
    /// The slot of a shared data dir this node holds until it exits.
    _slot: Option<data_dir::Slot>,
}

impl Node {
    /// Binds the listener, opens the data dir and starts Raft. A new data dir starts a
    /// one-member cluster; an existing one recovers its cluster without re-initializing.
    pub async fn start(mut config: Config) -> anyhow::Result<Self> {
        let slot = if config.shared_data_dir {
            let slot = data_dir::claim_slot(&config.data_dir)?;
            tracing::info!(slot = %slot.path.display(), "took a slot of the shared data dir");
            config.data_dir = slot.path.clone();
            Some(slot)
        } else {
            None
        };
        let started_ms = shoal_raft::unix_millis();
        let open_files = crate::http::raise_open_file_limit();
        let max_connections = config.edge.max_connections.or_else(|| {
            open_files.map(crate::http::default_max_connections).filter(|max| *max > 0)
        });
        tracing::info!(
            max_connections = max_connections.filter(|max| *max > 0),
            header_read_timeout = ?config.edge.header_read_timeout,
            idle_timeout = ?config.edge.idle_timeout,
            "client connections: at most {}",
            max_connections.filter(|max| *max > 0).map_or("any number".to_string(), |max| max.to_string())
        );
        let http = crate::http::Settings {
            timeouts: crate::http::Timeouts {
                header_read: config.edge.header_read_timeout,
                idle: config.edge.idle_timeout,
            },
            max_connections,
            drain: crate::http::DRAIN,
            fast_streams: config.edge.sse_fast_path,
        };
        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!("cannot listen on {} (is another node running there?)", config.listen)
        })?;
        let local_addr = listener.local_addr()?;
        if data_dir::left(&config.data_dir) {
            tracing::info!("this node left its cluster before it stopped: forgetting its replica");
            data_dir::forget_replica(&config.data_dir)?;
        }
        let engine_path = data_dir::prepare(&config.data_dir, config.storage_engine)?;
        let node_id = data_dir::node_id(&config.data_dir, config.node_id)?;
        let replaces = data_dir::replaces(&config.data_dir)?;
        if replaces == Some(node_id) {
            anyhow::bail!(
                "this data dir was reset (shoal reset-replica) to rejoin as a new member, but \
                 --node-id names the member it replaces ({node_id}): give it a new --node-id"
            );
        }
        let instance_id = config.instance_id.clone().unwrap_or_else(|| format!("shoal-{node_id}"));
        let peer_addrs = discovery::resolve_peers(&config.peers, discovery::NAMES_WAIT).await;
        let advertise_addr = match &config.advertise_addr {
            Some(addr) => addr.clone(),
            None => discovery::advertised_addr(local_addr, &peer_addrs).await,
        };

        let engine: Arc<dyn Engine> = {
            let path = engine_path.clone();
            let cache_bytes = config.storage_cache_bytes;
            let kind = config.storage_engine;
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
                    config.data_dir.display()
                )
            })?;
            engine
        };
        let secret = match &config.cluster_secret {
            Some(secret) => ClusterSecret::new(secret.as_bytes().to_vec()),
            // A node alone: nobody else may call its internal endpoints.
            None => ClusterSecret::random(),
        };
        let connect_timeout = config.heartbeat_interval.max(Duration::from_millis(200));
        let client = InternalClient::new(secret.clone(), connect_timeout);
        let options = ClusterOptions {
            node_id,
            advertise_addr: advertise_addr.clone(),
            heartbeat_interval: config.heartbeat_interval,
            election_timeout: (config.election_timeout, config.election_timeout * 2),
            snapshot_after_logs: config.snapshot_logs,
            logs_kept_after_snapshot: config.snapshot_logs.min(200),
            request_timeout: config.request_timeout,
            read_lease: config.read_lease.then_some(config.election_timeout / 2),
            client,
        };
        let log_dir = data_dir::raft_log(&config.data_dir);
        let cluster =
            Cluster::start(engine.clone(), &log_dir, options).await.map_err(
                |error| match error {
                    ClusterError::Damaged(damage) => anyhow::anyhow!(
                    "{damage}\nTo rebuild this replica: `shoal reset-replica --data-dir {}` with \
                     the node stopped, then start it as before.",
                    config.data_dir.display()
                ),
                    other => anyhow::Error::new(other).context("cannot start raft"),
                },
            )?;
        let peers: Vec<String> =
            config.peers.iter().filter(|peer| **peer != advertise_addr).cloned().collect();
        let bootstrap_expect = config
            .bootstrap_expect
            .unwrap_or_else(|| peers.iter().collect::<std::collections::BTreeSet<_>>().len() + 1);
        if config.bootstrap_expect.is_none() && peer_addrs.len() > peers.len() + 1 {
            tracing::warn!(
                bootstrap_expect,
                addresses = peer_addrs.len(),
                "--peers names resolve to more nodes than they are names: set \
                 --bootstrap-expect to the number of nodes that form the cluster"
            );
        }
        let initialized = cluster.is_initialized().await?;
        if let (Some(old), false, true) = (replaces, initialized, peers.is_empty()) {
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
            let members = BTreeMap::from([(node_id, RaftNode { addr: advertise_addr.clone() })]);
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

        let toucher = Toucher::default();
        let (stop_maintenance, stopped) = watch::channel(false);
        let maintenance = spawn_maintenance(
            cluster.clone(),
            toucher.clone(),
            config.maintenance_interval,
            stopped,
        );
        let (store, redis_store, feed, messages): (Store, _, _, _) = match &config.redis {
            None => {
                let store = ClusterStore::new(cluster.clone(), toucher.clone());
                (Arc::new(store), None, None, None)
            }
            Some(redis_config) => {
                let (redis, messages) =
                    Redis::connect(&redis_config.url).await.with_context(|| {
                        "cannot connect to Redis (check REDIS_URL, and that redis-server runs)"
                    })?;
                redis.ping().await.context("Redis does not answer PING")?;
                tracing::info!(addr = %redis.addr(), "redis connected: {}", redis.addr());
                let keys = RedisKeys { prefix: redis_config.prefix.clone() };
                let state = RedisStore { redis, keys };
                let feed = RedisFeed::start(state.clone());
                (Arc::new(state.clone()), Some(state), Some(feed), Some(messages))
            }
        };
        let mode = store.mode().as_str();
        tracing::info!(
            instance_id = %instance_id,
            node_id,
            mode,
            data_dir = %config.data_dir.display(),
            addr = %local_addr,
            advertise_addr = %advertise_addr,
            version = env!("CARGO_PKG_VERSION"),
            "shoal node started [mode: {mode}]"
        );
        // Every node of a cluster (or of one Redis) has the same key, so links work on any node.
        let signing_key = match (&config.cluster_secret, &redis_store) {
            (Some(_), _) => secret.derive("download links"),
            (None, Some(redis)) => shared_signing_key(redis).await?,
            (None, None) => data_dir::signing_key(&config.data_dir)?,
        };
        let signer = DownloadSigner::new(signing_key);
        let blob_store: Arc<dyn BlobStore> = match &redis_store {
            Some(redis) => Arc::new(RedisBlobStore::new(redis.redis.clone(), &redis.keys.prefix)),
            None => Arc::new(ClusterBlobStore::new(cluster.clone())),
        };
        let mut reports = Reports::new(blob_store, signer, config.report_ttl, instance_id.clone());
        let mut background = Vec::new();
        if let Some(s3) = &config.s3 {
            let settings = &s3.settings;
            let s3_store = S3BlobStore::new(settings.clone()).context("invalid S3 settings")?;
            tracing::info!(bucket = %settings.bucket, endpoint = ?settings.endpoint, "reports go to S3 bucket {}", settings.bucket);
            background.push(tokio::spawn(sweep_s3(
                s3_store.clone(),
                config.report_ttl,
                s3.sweep_interval,
                stop_maintenance.subscribe(),
            )));
            reports = reports.with_s3(S3Reports { store: s3_store, url_ttl: settings.url_ttl });
        }
        let reports = Arc::new(reports);
        let hub = Arc::new(match &feed {
            Some(feed) => Hub::with_sink(feed.sink()),
            None => Hub::default(),
        });
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
        let searches = Arc::new(Searches::new(
            store.clone(),
            node_id,
            hub.clone(),
            pool,
            reports.clone(),
            settings,
        ));
        if let (Some(feed), Some(messages)) = (&feed, messages) {
            feed.serve(hub.clone(), searches.clone(), messages).await?;
        }
        let gossip_port = config.gossip_port.unwrap_or(local_addr.port());
        let gossip = Arc::new(
            Gossip::start(
                GossipSettings {
                    node_id,
                    listen: SocketAddr::new(local_addr.ip(), gossip_port),
                    advertise: resolve(&advertise_addr, gossip_port).await?,
                    seeds: peers
                        .iter()
                        .map(|peer| {
                            let (host, port) = peer.rsplit_once(':').expect("validated host:port");
                            format!(
                                "{host}:{}",
                                config.gossip_port.map_or(port.to_string(), |p| p.to_string())
                            )
                        })
                        .collect(),
                    interval: config.gossip_interval,
                    secret: secret.clone(),
                    started_ms,
                },
                vec![
                    (KEY_API_ADDR.to_string(), advertise_addr.clone()),
                    (KEY_INSTANCE_ID.to_string(), instance_id.clone()),
                    // A restarted node says at once that it belongs to a cluster, so that
                    // no fresh node counts it as one to bootstrap with.
                    (KEY_RAFT.to_string(), raft_state(&cluster.status()).to_string()),
                    (
                        KEY_REPLACES.to_string(),
                        replaces.map_or_else(String::new, |old| old.to_string()),
                    ),
                ],
            )
            .await?,
        );
        let load = {
            let searches = searches.clone();
            move || {
                let pool = searches.pool_stats();
                pool.active + pool.queued
            }
        };
        let membership = tokio::spawn(gossip::membership::run(
            cluster.clone(),
            gossip.clone(),
            load,
            MembershipSettings {
                bootstrap_expect,
                max_voters: config.max_voters,
                dead_node_timeout: config.dead_node_timeout,
                interval: config.gossip_interval,
                caught_up_lag: 100,
                replaces: replaces.map(|old| (old, config.data_dir.clone())),
            },
            stop_maintenance.subscribe(),
        ));
        let takeover = tokio::spawn(jobs::takeover::run(
            searches.clone(),
            cluster.clone(),
            gossip.clone(),
            config.gossip_interval.max(Duration::from_millis(200)),
            started_ms,
            stop_maintenance.subscribe(),
        ));
        // Expired records' topics go within a tenth of the TTL (at most 30 s) after them.
        let sweep_interval = (config.progress_ttl / 10)
            .max(config.maintenance_interval)
            .min(Duration::from_secs(30));
        background.push(tokio::spawn(crate::sse::sweep::run(
            hub.clone(),
            store.clone(),
            sweep_interval,
            stop_maintenance.subscribe(),
        )));
        let events: Fabric = match feed {
            Some(feed) => Arc::new(RedisFabric { feed, hub: hub.clone() }),
            None => Arc::new(ClusterFabric {
                cluster: cluster.clone(),
                gossip: gossip.clone(),
                hub: hub.clone(),
                store: store.clone(),
                request_timeout: config.request_timeout,
            }),
        };
        let config_leave = config.leave_on_shutdown;
        let state = AppState(Arc::new(NodeContext {
            cluster,
            store,
            events,
            config,
            instance_id,
            metrics: crate::metrics::recorder(),
            hub,
            searches,
            reports,
            secret,
            started_ms,
            gossip: gossip.clone(),
        }));
        background.extend([maintenance, membership, takeover]);
        let leave = config_leave.then(|| Leave {
            cluster: state.cluster.clone(),
            gossip: gossip.clone(),
            keep_voters: bootstrap_expect,
        });
        let services =
            Services { state, engine, background, gossip, stop_maintenance, _slot: slot };
        Ok(Self { listener, http, services, leave })
    }

    /// Returns the address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Returns the router of this node's API (for tests through `Router::oneshot`).
    pub fn router(&self) -> Router {
        api::router(self.services.state.clone())
    }

    /// Serves until `shutdown` completes, then stops Raft and flushes storage.
    ///
    /// Tells systemd (`Type=notify`, over `$NOTIFY_SOCKET`) when the node can serve and
    /// when it stops. With `--leave-on-shutdown` it leaves its cluster before it stops
    /// serving, and forgets its replica once stopped if it left.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = self.router();
        let notifier = tokio::spawn(notify_when_ready(self.services.state.clone()));
        let left = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let data_dir = self.services.state.config.data_dir.clone();
        let leaving = {
            let (leave, left, data_dir) = (self.leave.clone(), left.clone(), data_dir.clone());
            async move {
                shutdown.await;
                notify(&[sd_notify::NotifyState::Stopping]);
                let Some(leave) = leave else { return };
                if leave.run().await {
                    if let Err(error) = data_dir::mark_left(&data_dir) {
                        tracing::warn!(%error, "cannot record that this node left");
                    }
                    left.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        };
        crate::http::serve(self.listener, router, leaving, self.http).await;
        notifier.abort();
        self.services.shutdown().await?;
        if left.load(std::sync::atomic::Ordering::SeqCst) {
            data_dir::forget_replica(&data_dir)?;
            tracing::info!(data_dir = %data_dir.display(), "forgot the replica of a node that left");
        }
        Ok(())
    }

    /// Stops the node without serving (for tests that drive [`Node::router`] directly).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.services.shutdown().await
    }
}

impl Services {
    /// Stops background work and Raft, and flushes storage.
    async fn shutdown(self) -> anyhow::Result<()> {
        tracing::info!("shutting down");
        let _ = self.stop_maintenance.send(true);
        for task in self.background {
            let _ = task.await;
        }
        self.gossip.shutdown();
        self.state.cluster.shutdown().await;
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.flush()).await??;
        tracing::info!("stopped");
        Ok(())
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

/// Sends `state` to systemd when it started this node with `Type=notify` (nothing
/// otherwise).
fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(error) = sd_notify::notify(state) {
        tracing::warn!(%error, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// Tells systemd the node is ready once it can serve reads and writes (what
/// `/api/health/ready` answers 200 to).
async fn notify_when_ready(state: AppState) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut waited = tokio::time::interval(Duration::from_millis(200));
    loop {
        waited.tick().await;
        if state.store.ready().await.is_ok() {
            let status = format!("serving as node {}", state.cluster.node_id());
            notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status)]);
            tracing::info!("told systemd the node is ready");
            return;
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

/// Runs a node with `config` until `shutdown` completes: what the `shoal` binary does.
/// A `shutdown` that completes while the node is still starting (waiting for its peers'
/// names, opening a large database) stops it there.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut shutdown = Box::pin(shutdown);
    let node = tokio::select! {
        node = Node::start(config) => node?,
        () = &mut shutdown => {
            tracing::info!("stopped while starting");
            return Ok(());
        }
    };
    node.serve(shutdown).await
}

/// Returns a future that completes on SIGINT or SIGTERM. The handlers are installed at
/// once, not when the future is first polled: as PID 1 in a container (no init), a
/// process ignores a SIGTERM for which it has no handler, and a node stopped while still
/// starting would wait out the whole stop timeout. Call it inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).expect("a SIGINT handler installs");
        let mut terminate = signal(SignalKind::terminate()).expect("a SIGTERM handler installs");
        async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Sets up logging: `filter` (or RUST_LOG when set) in text or JSON lines on stderr.
pub fn init_tracing(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A subscriber set already (tests, embedding applications) is fine.
    let _ = result;
}

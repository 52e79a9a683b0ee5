//! [`Node`]: opens storage, starts Raft, serves the API, and shuts down cleanly.

mod start;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use shoal_storage::Engine;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing_subscriber::EnvFilter;

use crate::api::{self, AppState};
use crate::config::{Config, LogFormat};
use crate::data_dir;
use crate::gossip::Gossip;
use crate::leave::Leave;

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
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        start::start(config).await
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

//! The HTTP/1.1 server loop: one task per connection, graceful shutdown.
//!
//! Why not `axum::serve`: it sniffs every connection for HTTP/2 first and hands hyper the
//! sniffed bytes back, which makes hyper grow each connection's read buffer from 8 to
//! 16 KiB; an idle SSE stream then holds about twice the memory it needs. Clients, load
//! balancers and the nodes themselves all speak HTTP/1.1 here (docs/decisions.md).

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long to wait before accepting again after the listener failed (out of file
/// descriptors, most likely).
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// How long open responses may take to finish at shutdown. SSE streams of running
/// searches would go on for as long as the search: they are cut after this, and their
/// clients reconnect (with `Last-Event-ID`) to another node.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and
/// returns once every open connection has finished its response, or after `drain`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) {
    // Routes resolved once, shared by every connection (a plain `Router` per connection
    // rebuilds its route table, about 10 KiB that an SSE client holds for its lifetime).
    let router = router.with_state::<()>(());
    // `closing` tells every connection to finish its response and close.
    let (closing, watcher) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed; retrying in 1 s");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            // Finished connections leave the set as they go.
            Some(_) = connections.join_next() => continue,
            () = &mut shutdown => break,
        };
        // Events and small responses go out at once rather than wait for an ACK.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut watcher = watcher.clone();
        connections.spawn(async move {
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            let mut connection = pin!(connection);
            tokio::select! {
                // A client that goes away mid-response is not this node's error.
                _ = connection.as_mut() => return,
                _ = watcher.wait_for(|closing| *closing) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    let _ = closing.send(true);
    let finished = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, finished).await.is_err() {
        tracing::info!(
            open = connections.len(),
            "closing the connections still open {drain:?} after shutdown began"
        );
        connections.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Instant;

    use axum::body::Body;
    use axum::routing::get;
    use bytes::Bytes;
    use futures::stream::{self, StreamExt};

    use super::*;

    #[tokio::test]
    async fn serves_http1_and_cuts_endless_streams_after_the_drain_at_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endless = || async {
            let first = stream::iter([Ok::<_, Infallible>(Bytes::from_static(b"first"))]);
            Body::from_stream(first.chain(stream::pending()))
        };
        let router =
            Router::new().route("/hello", get(|| async { "hi" })).route("/endless", get(endless));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let drain = Duration::from_millis(300);
        let server = tokio::spawn(serve(listener, router, async { stopped.await.unwrap() }, drain));

        let http = reqwest::Client::new();
        let hello = http.get(format!("http://{addr}/hello")).send().await.unwrap();
        assert_eq!(hello.version(), reqwest::Version::HTTP_11);
        assert_eq!(hello.text().await.unwrap(), "hi");
        let mut stream = http.get(format!("http://{addr}/endless")).send().await.unwrap();
        assert_eq!(stream.chunk().await.unwrap().as_deref(), Some(&b"first"[..]));

        let asked = Instant::now();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
        let took = asked.elapsed();
        assert!(took >= drain && took < drain * 4, "stopped after {took:?}");
        // The cut stream ends for the client (it reconnects elsewhere); nobody is served.
        let rest = tokio::time::timeout(Duration::from_secs(5), stream.chunk()).await.unwrap();
        assert!(!matches!(rest, Ok(Some(_))), "no more data after the cut: {rest:?}");
        assert!(http.get(format!("http://{addr}/hello")).send().await.is_err());
    }
}

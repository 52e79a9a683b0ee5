//! The HTTP/1.1 server loop: one task per connection, graceful shutdown.
//!
//! Why not `axum::serve`: it sniffs every connection for HTTP/2 first and hands hyper the
//! sniffed bytes back, which makes hyper grow each connection's read buffer from 8 to
//! 16 KiB; an idle SSE stream then holds about twice the memory it needs. Clients, load
//! balancers and the nodes themselves all speak HTTP/1.1 here (docs/decisions.md). A
//! connection that opens with an SSE request is answered by [`streams`] first, lighter
//! still, then goes on under hyper.

mod streams;

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
        let router = router.clone();
        let mut watcher = watcher.clone();
        connections.spawn(async move {
            let opening = tokio::select! {
                opening = streams::open(&stream) => opening,
                _ = watcher.wait_for(|closing| *closing) => return,
            };
            let stream = match opening {
                Ok(streams::Opening::Stream { request, head_len }) => {
                    match streams::serve(stream, request, head_len, router.clone()).await {
                        Ok(Some(stream)) => stream,
                        // Closed, or the client went away.
                        Ok(None) | Err(_) => return,
                    }
                }
                Ok(streams::Opening::Other) => stream,
                Ok(streams::Opening::Closed) | Err(_) => return,
            };
            let service = TowerToHyperService::new(router);
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
        // One endless response through hyper, one through the streaming path.
        let router = Router::new()
            .route("/hello", get(|| async { "hi" }))
            .route("/endless", get(endless))
            .route("/api/searches/{id}/events", get(endless));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let drain = Duration::from_millis(300);
        let server = tokio::spawn(serve(listener, router, async { stopped.await.unwrap() }, drain));

        let http = reqwest::Client::new();
        let hello = http.get(format!("http://{addr}/hello")).send().await.unwrap();
        assert_eq!(hello.version(), reqwest::Version::HTTP_11);
        assert_eq!(hello.text().await.unwrap(), "hi");
        let mut streams = Vec::new();
        for path in ["/endless", "/api/searches/s/events"] {
            let mut stream = http.get(format!("http://{addr}{path}")).send().await.unwrap();
            assert_eq!(stream.chunk().await.unwrap().as_deref(), Some(&b"first"[..]), "{path}");
            streams.push(stream);
        }

        let asked = Instant::now();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
        let took = asked.elapsed();
        assert!(took >= drain && took < drain * 4, "stopped after {took:?}");
        // The cut streams end for the client (it reconnects elsewhere); nobody is served.
        for mut stream in streams {
            let rest = tokio::time::timeout(Duration::from_secs(5), stream.chunk()).await.unwrap();
            assert!(!matches!(rest, Ok(Some(_))), "no more data after the cut: {rest:?}");
        }
        assert!(http.get(format!("http://{addr}/hello")).send().await.is_err());
    }

    /// Reads from `socket` until `end` has arrived; returns everything read.
    async fn read_until(socket: &mut tokio::net::TcpStream, end: &str) -> String {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        let mut buf = [0_u8; 4096];
        while !text.contains(end) {
            let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {end:?} in {text:?}"))
                .unwrap();
            assert!(read > 0, "closed before {end:?}: {text:?}");
            text.push_str(&String::from_utf8_lossy(&buf[..read]));
        }
        text
    }

    /// Drops into `dropped` when the stream that owns it goes.
    struct Guard(Option<tokio::sync::oneshot::Sender<()>>);

    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.take().map(|dropped| dropped.send(()));
        }
    }

    #[tokio::test]
    async fn sse_requests_stream_chunked_then_the_connection_goes_on_under_hyper() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (guard_tx, guard_rx) = tokio::sync::oneshot::channel();
        let guard = std::sync::Arc::new(std::sync::Mutex::new(Some(Guard(Some(guard_tx)))));
        let events = |axum::extract::Path(id): axum::extract::Path<String>| async move {
            let chunks = [format!("data: {id} one\n\n"), "data: two\n\n".to_string()];
            let body = Body::from_stream(stream::iter(chunks.map(Ok::<_, Infallible>)));
            ([("content-type", "text/event-stream")], body)
        };
        let endless = move || {
            let guard = guard.lock().unwrap().take();
            async move {
                let first = stream::iter([Ok::<_, Infallible>(Bytes::from_static(b"data: x\n\n"))]);
                let rest = stream::pending().map(move |item| {
                    let _held = &guard;
                    item
                });
                Body::from_stream(first.chain(rest))
            }
        };
        let router = Router::new()
            .route("/hello", get(|| async { "hi" }))
            .route("/api/trackers/{id}/events", get(events))
            .route("/api/searches/{id}/events", get(endless));
        let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, router, async { stopped.await.unwrap_or(()) }, DRAIN));

        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(b"GET /api/trackers/t1/events HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let response = read_until(&mut socket, "0\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.contains("content-type: text/event-stream\r\n"), "{response}");
        assert!(response.contains("transfer-encoding: chunked\r\n"), "{response}");
        let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
        assert_eq!(body, "e\r\ndata: t1 one\n\n\r\nb\r\ndata: two\n\n\r\n0\r\n\r\n");
        // The same connection serves the next request (hyper from here on).
        socket.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let hello = read_until(&mut socket, "hi").await;
        assert!(hello.starts_with("HTTP/1.1 200 OK\r\n"), "{hello}");

        // Unknown ids answer through the same router; `connection: close` closes after.
        let http = reqwest::Client::new();
        let missing = http.get(format!("http://{addr}/api/searches/a/b/events")).send().await;
        assert_eq!(missing.unwrap().status(), 404, "not this path: hyper answers");

        // A client that goes away: its stream (and what it holds) is dropped at once.
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET /api/searches/s/events HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        read_until(&mut client, "data: x").await;
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), guard_rx)
            .await
            .expect("the stream of a client that went away is dropped")
            .unwrap();
    }
}

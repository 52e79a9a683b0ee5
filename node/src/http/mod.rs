//! The HTTP/1.1 server loop: one task per connection, graceful shutdown.
//!
//! Why not `axum::serve`: it sniffs every connection for HTTP/2 first and hands hyper the
//! sniffed bytes back, which makes hyper grow each connection's read buffer from 8 to
//! 16 KiB; an idle SSE stream then holds about twice the memory it needs. Clients, load
//! balancers and the nodes themselves all speak HTTP/1.1 here (docs/decisions.md). A
//! connection that opens with an SSE request is answered by [`streams`] first, lighter
//! still, then goes on under hyper.
//!
//! Every connection is admitted by [`admission`] (the cap, and a reserve for health
//! checks and peers beyond it) and held to the header-read and idle timeouts of
//! [`deadline`], on both paths.

mod admission;
mod deadline;
#[cfg(test)]
mod same_bytes;
mod streams;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

pub use admission::{default_max_connections, raise_open_file_limit};
use admission::{Admission, Gate, Place, Reserved, Ticket};
use axum::Router;
pub use deadline::Timeouts;
use deadline::{Activity, Counted, HeadTimer};
use futures::FutureExt;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
#[cfg(feature = "fuzzing")]
pub(crate) use streams::parse as parse_stream_head;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long to wait before accepting again when accepting fails although a descriptor
/// was freed for it (the system's file table or memory is full).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
/// How long open responses may take to finish at shutdown. SSE streams of running
/// searches would go on for as long as the search: they are cut after this, and their
/// clients reconnect (with `Last-Event-ID`) to another node.
pub const DRAIN: Duration = Duration::from_secs(5);
/// What hyper's `header_read_timeout` is set to when a [`HeadTimer`] decides the
/// deadlines: only a switch (hyper adds it to `now`, so not `Duration::MAX`).
const TIMER_SWITCH: Duration = Duration::from_secs(24 * 3600);

/// How the server treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub timeouts: Timeouts,
    /// Connections served in full; `None` or `Some(0)`: no cap.
    pub max_connections: Option<usize>,
    /// How long open responses may take to finish at shutdown.
    pub drain: Duration,
    /// Whether a connection that opens with an SSE request is answered by [`streams`]
    /// (`--no-sse-fast-path` turns it off: hyper serves every response).
    pub fast_streams: bool,
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and
/// returns once every open connection has finished its response, or after the drain.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    settings: Settings,
) {
    // Routes resolved once, shared by every connection (a plain `Router` per connection
    // rebuilds its route table, about 10 KiB that an SSE client holds for its lifetime).
    let router = router.with_state::<()>(());
    // `closing` tells every connection to finish its response and close.
    let (closing, watcher) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let gate = Gate::new(settings.max_connections);
    // A descriptor held in reserve for the moment the process has no other (see below).
    let mut spare = std::fs::File::open("/dev/null").ok();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors (EMFILE), the pending connection stays queued and
                    // the listener stays readable: accepting again at once would spin,
                    // and sleeping would stall every client, health checks included.
                    // Instead the spare descriptor is freed, the connection accepted with
                    // it, answered 503 and closed, and the spare taken back: each turn of
                    // the loop takes one connection off the queue. The cap keeps this
                    // rare (connections are refused before the descriptors run out); a
                    // short pause remains for the case where even a freed descriptor does
                    // not help (a full system file table, no memory).
                    tracing::warn!(%error, "accepting a connection failed");
                    if !refuse_with_spare(&listener, &mut spare) {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            },
            // Finished connections leave the set as they go.
            Some(_) = connections.join_next() => continue,
            () = &mut shutdown => break,
        };
        let (admission, ticket) = gate.admit();
        match admission {
            Admission::Full => {}
            Admission::Reserve(place) => {
                connections.spawn(serve_reserved(stream, ticket, place, router.clone()));
                continue;
            }
            Admission::Refused => {
                admission::count_refused("capacity");
                admission::refuse_now(stream);
                continue;
            }
        }
        // Events and small responses go out at once rather than wait for an ACK.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let watcher = watcher.clone();
        connections.spawn(serve_connection(stream, ticket, router, watcher, settings));
    }
    let _ = closing.send(true);
    let finished = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(settings.drain, finished).await.is_err() {
        tracing::info!(
            open = connections.len(),
            "closing the connections still open {:?} after shutdown began",
            settings.drain
        );
        connections.shutdown().await;
    }
}

/// Accepts one pending connection with the spare descriptor freed, answers it 503 and
/// takes the spare back; returns whether a connection was taken off the queue.
fn refuse_with_spare(listener: &TcpListener, spare: &mut Option<std::fs::File>) -> bool {
    drop(spare.take());
    let taken = match listener.accept().now_or_never() {
        Some(Ok((stream, _))) => {
            admission::count_refused("capacity");
            admission::refuse_now(stream);
            true
        }
        Some(Err(_)) | None => false,
    };
    *spare = std::fs::File::open("/dev/null").ok();
    taken
}

/// Serves one connection admitted in full: the streaming path if it opens with an SSE
/// request, then hyper.
async fn serve_connection(
    stream: TcpStream,
    ticket: Ticket,
    router: Router,
    mut watcher: watch::Receiver<bool>,
    settings: Settings,
) {
    let _ticket = ticket;
    let timeouts = settings.timeouts;
    // A new connection has the header-read timeout from now for its first head, whoever
    // reads it; a silent one is closed then.
    let first_head = timeouts.header_read.map(|timeout| Instant::now() + timeout);
    let opening = async {
        if !settings.fast_streams {
            return Ok(Ok(streams::Opening::Other));
        }
        match first_head {
            Some(deadline) => tokio::time::timeout_at(deadline, streams::open(&stream)).await,
            None => Ok(streams::open(&stream).await),
        }
    };
    let opening = tokio::select! {
        opening = opening => opening,
        _ = watcher.wait_for(|closing| *closing) => return,
    };
    let (stream, first_head) = match opening {
        Ok(Ok(streams::Opening::Stream { request, head_len })) => {
            match streams::serve(stream, request, head_len, router.clone()).await {
                // Its next request is a keep-alive one: the idle timeout first.
                Ok(Some(stream)) => (stream, None),
                // Closed, or the client went away.
                Ok(None) | Err(_) => return,
            }
        }
        Ok(Ok(streams::Opening::Other)) => (stream, first_head),
        // Closed, failed, or silent past the header-read timeout.
        Ok(Ok(streams::Opening::Closed) | Err(_)) | Err(_) => return,
    };
    let service = TowerToHyperService::new(router);
    let mut builder = http1::Builder::new();
    let activity = Arc::new(Activity::default());
    if timeouts.any() {
        builder.timer(HeadTimer::new(
            activity.clone(),
            timeouts,
            first_head.map(Instant::into_std),
        ));
        builder.header_read_timeout(TIMER_SWITCH);
    } else {
        builder.header_read_timeout(None);
    }
    let io = TokioIo::new(Counted::new(stream, activity));
    let connection = builder.serve_connection(io, service);
    let mut connection = pin!(connection);
    tokio::select! {
        // A client that goes away mid-response is not this node's error.
        _ = connection.as_mut() => return,
        _ = watcher.wait_for(|closing| *closing) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// Serves a connection in the reserve: one request, if it is one the reserve serves.
async fn serve_reserved(stream: TcpStream, ticket: Ticket, place: Arc<Place>, router: Router) {
    let _ticket = ticket;
    match admission::reserve_decides(&stream, &place).await {
        Reserved::Serve => {}
        Reserved::Refuse => {
            admission::count_refused("reserve");
            admission::refuse(stream).await;
            return;
        }
        Reserved::Evicted => {
            admission::count_refused("reserve");
            admission::refuse_now(stream);
            return;
        }
    }
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(router);
    let mut builder = http1::Builder::new();
    builder.keep_alive(false);
    let timeouts = Timeouts { header_read: Some(admission::RESERVE_HEAD_DEADLINE), idle: None };
    let activity = Arc::new(Activity::default());
    let first_head = std::time::Instant::now() + admission::RESERVE_HEAD_DEADLINE;
    builder.timer(HeadTimer::new(activity.clone(), timeouts, Some(first_head)));
    builder.header_read_timeout(TIMER_SWITCH);
    let io = TokioIo::new(Counted::new(stream, activity));
    // At shutdown, the drain cuts it like any other.
    let _ = builder.serve_connection(io, service).await;
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

    fn test_settings() -> Settings {
        let timeouts = Timeouts { header_read: None, idle: None };
        Settings { timeouts, max_connections: None, drain: DRAIN, fast_streams: true }
    }

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
        let settings = Settings { drain, ..test_settings() };
        let server =
            tokio::spawn(serve(listener, router, async { stopped.await.unwrap() }, settings));

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
        let shutdown = async { stopped.await.unwrap_or(()) };
        tokio::spawn(serve(listener, router, shutdown, test_settings()));

        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(b"GET /api/trackers/t1/events HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let response = read_until(&mut socket, "0\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.contains("content-type: text/event-stream\r\n"), "{response}");
        assert!(response.contains("transfer-encoding: chunked\r\n"), "{response}");
        let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
        assert_eq!(body, "E\r\ndata: t1 one\n\n\r\nB\r\ndata: two\n\n\r\n0\r\n\r\n");
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

    /// Starts a server with `settings` whose routes answer at once, `/api/health` too,
    /// and stream endlessly at `/endless` (hyper) and `/api/searches/s/events` (the
    /// streaming path); returns its address.
    async fn start(settings: Settings) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ticking = || async {
            let ticks = stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Ok::<_, Infallible>(Bytes::from_static(b": tick\n")), ()))
            });
            Body::from_stream(ticks)
        };
        let router = Router::new()
            .route("/hello", get(|| async { "hi" }))
            .route("/api/health", get(|| async { "ok" }))
            .route("/endless", get(ticking))
            .route("/api/searches/{id}/events", get(ticking));
        tokio::spawn(serve(listener, router, std::future::pending(), settings));
        addr
    }

    /// Returns how long until the server closes `socket` (reading and dropping whatever
    /// it sends), at most `limit`.
    async fn closed_after(socket: &mut tokio::net::TcpStream, limit: Duration) -> Duration {
        use tokio::io::AsyncReadExt;
        let started = Instant::now();
        let mut buf = [0_u8; 4096];
        loop {
            match tokio::time::timeout_at((started + limit).into(), socket.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return started.elapsed(),
                Ok(Ok(_)) => {}
                Err(_) => return limit,
            }
        }
    }

    fn timeouts(header_read_ms: u64, idle_ms: u64) -> Settings {
        let timeouts = Timeouts {
            header_read: Some(Duration::from_millis(header_read_ms)),
            idle: Some(Duration::from_millis(idle_ms)),
        };
        Settings { timeouts, ..test_settings() }
    }

    #[tokio::test]
    async fn silent_connections_and_slow_heads_are_closed_after_the_header_read_timeout() {
        use tokio::io::AsyncWriteExt;
        let addr = start(timeouts(300, 1_500)).await;
        // Silent from the start.
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let took = closed_after(&mut silent, Duration::from_secs(3)).await;
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(1_000),
            "{took:?}"
        );

        // A head sent a byte every 50 ms never completes in time, though bytes keep coming.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let head = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut cut = None;
        for byte in head {
            if slow.write_all(&[*byte]).await.is_err() {
                cut = Some(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cut = match cut {
            Some(cut) => cut,
            None => started.elapsed() + closed_after(&mut slow, Duration::from_secs(3)).await,
        };
        assert!(cut < Duration::from_millis(1_000), "a slow head was cut after {cut:?}");

        // A slow head after a keep-alive request: the header-read timeout from its first
        // byte, not the (longer) idle timeout.
        let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        read_until(&mut kept, "hi").await;
        kept.write_all(b"GET /hel").await.unwrap();
        let took = closed_after(&mut kept, Duration::from_secs(3)).await;
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(1_000),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn keep_alive_connections_wait_the_idle_timeout_and_streams_are_never_idle() {
        use tokio::io::AsyncWriteExt;
        let addr = start(timeouts(200, 800)).await;
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        for _ in 0..2 {
            socket.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
            read_until(&mut socket, "hi").await;
            // Longer than the header-read timeout, shorter than the idle one.
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        socket.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        read_until(&mut socket, "hi").await;
        let took = closed_after(&mut socket, Duration::from_secs(3)).await;
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_millis(1_500),
            "{took:?}"
        );

        // Responses that last longer than both timeouts, on either path, go on.
        for path in ["/endless", "/api/searches/s/events"] {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            read_until(&mut stream, "tick").await;
            let took = closed_after(&mut stream, Duration::from_millis(1_500)).await;
            assert_eq!(took, Duration::from_millis(1_500), "{path} was cut after {took:?}");
        }
    }

    #[tokio::test]
    async fn beyond_the_cap_a_reserve_serves_health_checks_and_the_rest_get_503() {
        use tokio::io::AsyncWriteExt;
        let addr = start(Settings { max_connections: Some(1), ..test_settings() }).await;
        let mut held = tokio::net::TcpStream::connect(addr).await.unwrap();
        held.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        read_until(&mut held, "hi").await;

        let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut health = tokio::net::TcpStream::connect(addr).await.unwrap();
        health.write_all(request("/api/health").as_bytes()).await.unwrap();
        let answer = read_until(&mut health, "ok").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("connection: close"), "one request each: {answer}");
        let mut other = tokio::net::TcpStream::connect(addr).await.unwrap();
        other.write_all(request("/hello").as_bytes()).await.unwrap();
        let answer = read_until(&mut other, "over_capacity").await;
        assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
        assert!(answer.contains("retry-after: 1\r\n"), "{answer}");

        // The reserve full of silent connections: a health check still gets through, in
        // the place of the oldest silent one, which is closed at once.
        let mut silent = Vec::new();
        for _ in 0..admission::RESERVED_CONNECTIONS {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut health = tokio::net::TcpStream::connect(addr).await.unwrap();
        health.write_all(request("/api/health").as_bytes()).await.unwrap();
        assert!(read_until(&mut health, "ok").await.starts_with("HTTP/1.1 200 OK"));
        let took = closed_after(&mut silent[0], Duration::from_secs(3)).await;
        assert!(took < Duration::from_millis(100), "the oldest silent one went after {took:?}");
        // The others go after the reserve's short deadline.
        let took = closed_after(&mut silent[1], Duration::from_secs(3)).await;
        assert!(took < admission::RESERVE_HEAD_DEADLINE * 2, "{took:?}");
        drop(held);
    }
}

//! The streaming path's fence: the same SSE scenarios through hyper and through
//! [`super::streams`], on one node, must give the same bytes (but for hyper's `date`
//! header, and the order of header lines).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use super::{serve, Settings, Timeouts, DRAIN};
use crate::{Config, Node};

/// How long each step may take.
const STEP: Duration = Duration::from_secs(10);

async fn call(router: &Router, method: Method, uri: &str, body: &str) -> serde_json::Value {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert!(response.status().is_success(), "{uri}: {}", response.status());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
}

/// Serves `router` on a new loopback listener, with or without the streaming path.
async fn listen(router: Router, fast_streams: bool) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let timeouts = Timeouts { header_read: Some(STEP), idle: Some(STEP) };
    let settings = Settings { timeouts, max_connections: None, drain: DRAIN, fast_streams };
    tokio::spawn(serve(listener, router, std::future::pending(), settings));
    addr
}

/// Sends `head` and collects what comes back, until the server closes, into `received`.
async fn read_all(addr: std::net::SocketAddr, head: String, received: Arc<Mutex<Vec<u8>>>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0_u8; 4096];
    loop {
        match stream.read(&mut buf).await.unwrap() {
            0 => return,
            n => received.lock().unwrap().extend_from_slice(&buf[..n]),
        }
    }
}

/// A response with what may differ between the paths taken out: its status line, its
/// header lines without `date` (sorted), and the bytes after the head.
#[derive(PartialEq, Eq)]
struct Normalized {
    status: String,
    headers: Vec<String>,
    body: Vec<u8>,
}

impl std::fmt::Debug for Normalized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        write!(f, "{}\n{}\n\n{body}", self.status, self.headers.join("\n"))
    }
}

/// Returns `response` normalized, and whether it carried a `date` header (hyper writes
/// one, the streaming path does not: so the test knows which path answered).
fn normalized(response: &[u8]) -> (Normalized, bool) {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole head") + 4;
    let head = String::from_utf8(response[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n").filter(|line| !line.is_empty());
    let status = lines.next().unwrap().to_string();
    let mut headers: Vec<String> = lines.map(str::to_ascii_lowercase).collect();
    let dated = headers.iter().any(|line| line.starts_with("date:"));
    headers.retain(|line| !line.starts_with("date:"));
    headers.sort();
    (Normalized { status, headers, body: response[end..].to_vec() }, dated)
}

/// Checks that `fast` came through the streaming path, `hyper` through hyper, and that
/// they are the same.
fn assert_same(fast: &[u8], hyper: &[u8], what: &str) {
    let ((fast, fast_dated), (hyper, hyper_dated)) = (normalized(fast), normalized(hyper));
    assert!(!fast_dated && hyper_dated, "{what}: a path other than the one asked for answered");
    assert_eq!(fast, hyper, "{what}: the streaming path's bytes differ from hyper's");
}

async fn wait_for(what: &str, received: &Mutex<Vec<u8>>, needle: &[u8]) {
    let found = async {
        while !received.lock().unwrap().windows(needle.len()).any(|w| w == needle) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(STEP, found).await.is_err() {
        let seen = String::from_utf8_lossy(&received.lock().unwrap()).to_string();
        panic!(
            "{what} did not get {:?} within {STEP:?}; got {seen:?}",
            String::from_utf8_lossy(needle)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_scenarios_give_the_same_bytes_through_hyper_and_the_streaming_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default_for_tests(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.raft.heartbeat_interval = Duration::from_millis(50);
    config.raft.election_timeout = Duration::from_millis(150);
    let node = Node::start(config).await.unwrap();
    let router = node.router();
    let (fast, hyper) = (listen(router.clone(), true).await, listen(router.clone(), false).await);

    let created = call(&router, Method::POST, "/api/trackers", r#"{"total":2}"#).await;
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/api/trackers/{id}/events");
    let head = |extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: shoal\r\nConnection: close\r\n{extra}\r\n")
    };

    // A live stream, followed through both paths at once while events arrive.
    let (fast_live, hyper_live) = (Arc::default(), Arc::default());
    let readers = [
        tokio::spawn(read_all(fast, head(""), Arc::clone(&fast_live))),
        tokio::spawn(read_all(hyper, head(""), Arc::clone(&hyper_live))),
    ];
    wait_for("the streaming path", &fast_live, b"event: snapshot").await;
    wait_for("hyper", &hyper_live, b"event: snapshot").await;
    for data in [r#"{"done":1}"#, r#"{"done":2,"note":"\u00e9\n"}"#] {
        let event = format!(r#"{{"type":"progress","data":{data}}}"#);
        call(&router, Method::POST, &path, &event).await;
    }
    call(&router, Method::POST, &path, r#"{"type":"completed","data":{"rows":2}}"#).await;
    for reader in readers {
        tokio::time::timeout(STEP, reader).await.expect("the stream ends").unwrap();
    }
    let fast_live = fast_live.lock().unwrap().clone();
    assert!(fast_live.windows(15).any(|w| w == b"event: complete"), "{fast_live:?}");
    assert_same(&fast_live, &hyper_live.lock().unwrap(), "a live stream");

    // The finished stream: from the record, resumed part way, and resumed at its end (204).
    for extra in ["", "Last-Event-ID: 1:1\r\n", "Last-Event-ID: 1:3\r\n", "Last-Event-ID: 7\r\n"] {
        let (fast_bytes, hyper_bytes) = (Arc::default(), Arc::default());
        read_all(fast, head(extra), Arc::clone(&fast_bytes)).await;
        read_all(hyper, head(extra), Arc::clone(&hyper_bytes)).await;
        let (fast_bytes, hyper_bytes) =
            (fast_bytes.lock().unwrap().clone(), hyper_bytes.lock().unwrap().clone());
        assert_same(&fast_bytes, &hyper_bytes, &format!("a finished stream with {extra:?}"));
    }
    node.shutdown().await.unwrap();
}

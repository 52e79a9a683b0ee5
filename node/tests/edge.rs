//! The public edge through `Router::oneshot`: metric labels from a closed set, the
//! session cookie's `Secure`, cross-site requests refused before they change anything,
//! tracker events bounded in size, and unfinished trackers that expire.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use shoal_node::{Config, Node};
use tower::ServiceExt;

struct TestNode {
    router: Router,
    node: Node,
    _dir: tempfile::TempDir,
}

async fn start_node_with(adjust: impl FnOnce(&mut Config)) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default_for_tests(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.raft.heartbeat_interval = Duration::from_millis(50);
    config.raft.election_timeout = Duration::from_millis(150);
    config.raft.maintenance_interval = Duration::from_millis(100);
    adjust(&mut config);
    let node = Node::start(config).await.unwrap();
    TestNode { router: node.router(), node, _dir: dir }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl TestNode {
    async fn call(&self, method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::from(body.to_string())).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Answer { status, headers, body }
    }

    async fn metrics(&self) -> String {
        self.call("GET", "/metrics", &[], "").await.body.as_str().unwrap().to_string()
    }
}

/// The lines of the request counter in `metrics`.
fn request_series(metrics: &str) -> Vec<&str> {
    metrics.lines().filter(|line| line.starts_with("shoal_http_requests_total{")).collect()
}

#[tokio::test]
async fn metric_labels_come_from_a_closed_set_whatever_the_requests() {
    let node = start_node_with(|_| {}).await;
    // The attack: every request its own method and path. Each distinct label value would
    // be a series kept for the life of the process (20,000 of them made /metrics 45 MB).
    for n in 0..300 {
        let answer = node.call(&format!("M{n}X"), &format!("/made/up/{n}"), &[], "").await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        node.call(&format!("Q{n}"), "/api/health", &[], "").await;
    }
    let metrics = node.metrics().await;
    // (Other tests of this binary share the recorder: count only what the attack makes.)
    let other: Vec<&str> = request_series(&metrics)
        .into_iter()
        .filter(|line| !line.contains(r#"method="GET""#) && !line.contains(r#"method="POST""#))
        .filter(|line| !line.contains(r#"method="PUT""#) && !line.contains(r#"method="PATCH""#))
        .filter(|line| !line.contains(r#"method="DELETE""#))
        .collect();
    assert!(other.len() <= 2, "600 odd requests made {} series: {other:#?}", other.len());
    assert!(!metrics.contains("M1X") && !metrics.contains("/made/up"), "{metrics}");
    assert!(metrics.contains(r#"method="other""#), "{metrics}");
    assert!(metrics.contains(r#"route="unmatched""#), "{metrics}");
    assert!(metrics.contains(r#"route="/api/health""#), "{metrics}");
    node.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_session_cookie_is_secure_when_asked() {
    let plain = start_node_with(|_| {}).await;
    let created = plain.call("POST", "/api/sessions", &[], "{}").await;
    let cookie = created.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(!cookie.contains("Secure"), "{cookie}");
    plain.node.shutdown().await.unwrap();

    let secure = start_node_with(|config| config.edge.cookie_secure = true).await;
    let created = secure.call("POST", "/api/sessions", &[], "{}").await;
    let id = created.body["id"].as_str().unwrap().to_string();
    let cookie = created.headers[header::SET_COOKIE].to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "; Secure"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    let session_cookie = format!("shoal_session={id}");
    let refreshed = secure.call("GET", "/api/session", &[("cookie", &session_cookie)], "").await;
    assert!(refreshed.headers[header::SET_COOKIE].to_str().unwrap().ends_with("; Secure"));
    let uri = format!("/api/sessions/{id}");
    let deleted = secure.call("DELETE", &uri, &[("cookie", &session_cookie)], "").await;
    assert!(deleted.headers[header::SET_COOKIE].to_str().unwrap().contains("Secure"));
    secure.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn cross_site_requests_change_nothing() {
    let node = start_node_with(|config| {
        config.edge.allowed_origins = vec!["https://app.example.com".to_string()];
    })
    .await;
    let sessions_live = |metrics: String| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("shoal_sessions_live "))
            .map(|count| count.trim().parse::<f64>().unwrap())
            .unwrap()
    };
    // The attack's payload: a form that posts `text/plain` (a simple request, no preflight)
    // whose body parses as JSON. Without a browser's markers it is what curl sends, and it
    // creates a session and sets its cookie.
    let form = r#"{"data":{"user":"victim"}}"#;
    let text_plain = ("content-type", "text/plain");
    let host = ("host", "api.example.com");
    let created = node.call("POST", "/api/sessions", &[text_plain, host], form).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(created.headers.contains_key(header::SET_COOKIE));
    let id = created.body["id"].as_str().unwrap().to_string();
    let live = sessions_live(node.metrics().await);

    // The same request as a browser sends it from another site: refused, nothing stored.
    for markers in [
        &[("sec-fetch-site", "cross-site")][..],
        &[("sec-fetch-site", "same-site"), ("origin", "https://sub.example.com")],
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
    ] {
        let mut headers = vec![text_plain, host];
        headers.extend_from_slice(markers);
        for (method, uri, body) in [
            ("POST", "/api/sessions".to_string(), form),
            ("PUT", format!("/api/sessions/{id}"), r#"{"data":{"x":1}}"#),
            ("PATCH", format!("/api/sessions/{id}"), r#"{"x":1}"#),
            ("DELETE", format!("/api/sessions/{id}"), ""),
            ("POST", "/api/trackers".to_string(), r#"{"total":1}"#),
        ] {
            let answer = node.call(method, &uri, &headers, body).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {uri} {markers:?}");
            assert_eq!(answer.body["error"], "cross_site", "{}", answer.body);
            assert!(!answer.headers.contains_key(header::SET_COOKIE));
        }
    }
    assert_eq!(sessions_live(node.metrics().await), live, "no session was created");
    let kept = node.call("GET", &format!("/api/sessions/{id}"), &[], "").await;
    assert_eq!(kept.body["data"], json!({"user": "victim"}), "nor changed");

    // What passes: the node's own pages, allowed origins, reads, and no markers at all.
    for markers in [
        &[("sec-fetch-site", "same-origin")][..],
        &[("sec-fetch-site", "none")],
        &[("origin", "http://api.example.com")],
        &[("sec-fetch-site", "cross-site"), ("origin", "https://app.example.com")],
        &[],
    ] {
        let mut headers = vec![host];
        headers.extend_from_slice(markers);
        let answer = node.call("POST", "/api/sessions", &headers, "{}").await;
        assert_eq!(answer.status, StatusCode::CREATED, "{markers:?}: {}", answer.body);
    }
    let cross_read = [host, ("sec-fetch-site", "cross-site")];
    let read = node.call("GET", &format!("/api/sessions/{id}"), &cross_read, "").await;
    assert_eq!(read.status, StatusCode::OK);
    // /internal/* is signed, not a browser's: its own check answers.
    let internal = node.call("POST", "/internal/raft/vote", &cross_read, "").await;
    assert_eq!(internal.status, StatusCode::UNAUTHORIZED);
    node.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_event_over_the_size_limit_is_refused_and_publishes_nothing() {
    let node = start_node_with(|_| {}).await;
    let created = node.call("POST", "/api/trackers", &[], r#"{"total":3}"#).await;
    let id = created.body["id"].as_str().unwrap().to_string();
    let events = format!("/api/trackers/{id}/events");
    let big = json!({"type": "progress", "data": {"blob": "x".repeat(20 * 1024)}}).to_string();
    let refused = node.call("POST", &events, &[], &big).await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", refused.body);
    assert_eq!(refused.body["error"], "too_large");
    let big_end = big.replace("progress", "completed");
    let refused = node.call("POST", &events, &[], &big_end).await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", refused.body);
    // Nothing was numbered or recorded: the next event is the first.
    let small = json!({"type": "progress", "data": {"blob": "x".repeat(16 * 1024 - 20)}});
    let accepted = node.call("POST", &events, &[], &small.to_string()).await;
    assert_eq!((accepted.status, accepted.body["seq"].as_u64()), (StatusCode::ACCEPTED, Some(1)));
    let state = node.call("GET", &format!("/api/trackers/{id}"), &[], "").await;
    assert_eq!(state.body["status"], "running");
    node.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unfinished_tracker_lives_its_ttl_after_its_last_event() {
    let ttl = Duration::from_secs(2);
    let node = start_node_with(|config| config.searches.progress_ttl = ttl).await;
    let created = node.call("POST", "/api/trackers", &[], r#"{"total":3}"#).await;
    let id = created.body["id"].as_str().unwrap().to_string();
    let (tracker, events) = (format!("/api/trackers/{id}"), format!("/api/trackers/{id}/events"));
    // Events keep it alive past its TTL, though none is recorded through Raft.
    let fed_until = Instant::now() + ttl * 2;
    let mut last_event = Instant::now();
    while last_event < fed_until {
        let progress = node.call("POST", &events, &[], r#"{"type":"progress"}"#).await;
        assert_eq!(progress.status, StatusCode::ACCEPTED, "{}", progress.body);
        last_event = Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(node.call("GET", &tracker, &[], "").await.status, StatusCode::OK);
    // Then nobody feeds it: it goes between its TTL and a tenth more after the last event
    // (an unfinished record used to live an hour after its last milestone).
    loop {
        let status = node.call("GET", &tracker, &[], "").await.status;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        let waited = last_event.elapsed();
        assert!(waited < ttl * 2, "still there {waited:?} after its last event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        last_event.elapsed() >= ttl,
        "gone only {:?} after its last event",
        last_event.elapsed()
    );
    let late = node.call("POST", &events, &[], r#"{"type":"progress"}"#).await;
    assert_eq!(late.status, StatusCode::NOT_FOUND);
    node.node.shutdown().await.unwrap();
}

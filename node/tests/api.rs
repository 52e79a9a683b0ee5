//! Handler tests through `Router::oneshot` on a real single-node cluster (sled in a temp
//! dir, real Raft), without sockets.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use shoal_node::{Config, Node};
use tower::ServiceExt;

struct TestNode {
    router: Router,
    node: Node,
    dir: tempfile::TempDir,
}

async fn start_node() -> TestNode {
    start_node_with(|_| {}).await
}

async fn start_node_with(adjust: impl FnOnce(&mut Config)) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default_for_tests(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.max_session_bytes = 1024;
    config.raft.heartbeat_interval = Duration::from_millis(50);
    config.raft.election_timeout = Duration::from_millis(150);
    config.raft.maintenance_interval = Duration::from_millis(100);
    config.searches.sample_page_delay = Duration::from_millis(10);
    adjust(&mut config);
    let node = Node::start(config).await.unwrap();
    TestNode { router: node.router(), node, dir }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl TestNode {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::from(body.to_string())).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Answer { status, headers, body }
    }

    async fn create(&self, body: &str) -> Answer {
        self.call(Method::POST, "/api/sessions", &[], body).await
    }

    async fn get_raw(&self, uri: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, headers, bytes.to_vec())
    }

    /// Returns the node's download signer, from the key in its data dir.
    fn signer(&self) -> shoal_node::reports::DownloadSigner {
        let text = std::fs::read_to_string(self.dir.path().join("data/signing.key")).unwrap();
        let bytes: Vec<u8> =
            (0..64).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect();
        shoal_node::reports::DownloadSigner::new(bytes.try_into().unwrap())
    }

    async fn get(&self, uri: &str) -> Answer {
        self.call(Method::GET, uri, &[], "").await
    }
}

/// Asserts the JSON error shape and status.
fn assert_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "body: {}", answer.body);
    assert_eq!(answer.body["error"], code, "body: {}", answer.body);
    assert!(answer.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", answer.body);
}

#[tokio::test]
async fn session_lifecycle() {
    let node = start_node().await;

    let created = node.create(r#"{"data":{"user":"ana","cart":[1,2]},"ttl_secs":600}"#).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(created.body["data"], json!({"user":"ana","cart":[1,2]}));
    assert_eq!(created.body["version"], 1);
    assert!(created.body["expires_at"].as_str().unwrap().ends_with('Z'));
    let cookie = created.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with(&format!("shoal_session={id};")), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=600"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert_eq!(created.headers[header::LOCATION], format!("/api/sessions/{id}").as_str());

    let by_id = node.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(by_id.status, StatusCode::OK);
    assert_eq!(by_id.body, created.body);
    assert_eq!(by_id.headers[header::ETAG], "\"1\"");

    let cookie_header = format!("theme=dark; shoal_session={id}");
    let by_cookie = node.call(Method::GET, "/api/session", &[("cookie", &cookie_header)], "").await;
    assert_eq!(by_cookie.status, StatusCode::OK);
    assert_eq!(by_cookie.body["id"], id.as_str());

    let uri = format!("/api/sessions/{id}");
    let patched = node
        .call(Method::PATCH, &uri, &[("if-match", "\"1\"")], r#"{"cart":null,"theme":"dark"}"#)
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["data"], json!({"user":"ana","theme":"dark"}));
    assert_eq!(patched.body["version"], 2);

    let stale = node.call(Method::PATCH, &uri, &[("if-match", "\"1\"")], r#"{"x":1}"#).await;
    assert_error(&stale, StatusCode::PRECONDITION_FAILED, "version_mismatch");

    let replaced = node.call(Method::PUT, &uri, &[], r#"{"data":{"only":"this"}}"#).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(replaced.body["data"], json!({"only":"this"}));
    assert_eq!(replaced.body["version"], 3);

    let stale_delete = node.call(Method::DELETE, &uri, &[("if-match", "2")], "").await;
    assert_error(&stale_delete, StatusCode::PRECONDITION_FAILED, "version_mismatch");
    let deleted = node.call(Method::DELETE, &uri, &[("cookie", &cookie_header)], "").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    assert_error(&node.get(&uri).await, StatusCode::NOT_FOUND, "session_not_found");
    let again = node.call(Method::DELETE, &uri, &[], "").await;
    assert_error(&again, StatusCode::NOT_FOUND, "session_not_found");

    let empty = node.create("").await;
    assert_eq!(empty.status, StatusCode::CREATED);
    assert_eq!(empty.body["data"], json!({}));
    node.node.shutdown().await.unwrap();
}

/// Method, URI, headers, body, and the status and error code it must get.
type BadRequest =
    (Method, String, Vec<(&'static str, &'static str)>, String, StatusCode, &'static str);

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let node = start_node().await;
    let created = node.create(r#"{"data":{"keep":"me"}}"#).await;
    let id = created.body["id"].as_str().unwrap().to_string();
    let uri = format!("/api/sessions/{id}");
    let big = "x".repeat(2000);

    let cases: Vec<BadRequest> = vec![
        (
            Method::POST,
            "/api/sessions".into(),
            vec![],
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::POST,
            "/api/sessions".into(),
            vec![],
            r#"{"data":5}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            Method::POST,
            "/api/sessions".into(),
            vec![],
            r#"{"ttl_secs":"soon"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            Method::POST,
            "/api/sessions".into(),
            vec![],
            r#"{"ttl_secs":0}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            Method::POST,
            "/api/sessions".into(),
            vec![],
            r#"{"ttl":5}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            Method::POST,
            "/api/sessions".into(),
            vec![],
            format!(r#"{{"data":{{"x":"{big}"}}}}"#),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            Method::POST,
            "/api/sessions".into(),
            vec![],
            format!(r#"{{"data":{{"x":"{}"}}}}"#, "y".repeat(40_000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            Method::PATCH,
            uri.clone(),
            vec![],
            "[1,2]".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            Method::PATCH,
            uri.clone(),
            vec![],
            "{\"a\":".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::PATCH,
            uri.clone(),
            vec![],
            format!(r#"{{"x":"{big}"}}"#),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            Method::PATCH,
            uri.clone(),
            vec![("if-match", "\"v2\"")],
            r#"{"a":1}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_if_match",
        ),
        (
            Method::PATCH,
            uri.clone(),
            vec![("if-match", "\"7\"")],
            r#"{"a":1}"#.into(),
            StatusCode::PRECONDITION_FAILED,
            "version_mismatch",
        ),
        (
            Method::PUT,
            uri.clone(),
            vec![],
            r#"{"data":"text"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            Method::PUT,
            uri.clone(),
            vec![],
            r#"{}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            Method::PUT,
            uri.clone(),
            vec![],
            format!(r#"{{"data":{{"x":"{big}"}}}}"#),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            Method::DELETE,
            uri.clone(),
            vec![("if-match", "nope")],
            String::new(),
            StatusCode::BAD_REQUEST,
            "invalid_if_match",
        ),
        (
            Method::GET,
            "/api/sessions/00000000000000000000000000000000".into(),
            vec![],
            String::new(),
            StatusCode::NOT_FOUND,
            "session_not_found",
        ),
        (
            Method::GET,
            "/api/sessions/not-an-id".into(),
            vec![],
            String::new(),
            StatusCode::NOT_FOUND,
            "session_not_found",
        ),
        (
            Method::PATCH,
            "/api/sessions/00000000000000000000000000000000".into(),
            vec![],
            r#"{"a":1}"#.into(),
            StatusCode::NOT_FOUND,
            "session_not_found",
        ),
        (
            Method::GET,
            "/api/session".into(),
            vec![],
            String::new(),
            StatusCode::NOT_FOUND,
            "no_session",
        ),
        (
            Method::GET,
            "/api/nothing-here".into(),
            vec![],
            String::new(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/api/health".into(),
            vec![],
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, uri, headers, body, status, code) in cases {
        let answer = node.call(method.clone(), &uri, &headers, &body).await;
        assert_eq!(
            answer.status,
            status,
            "{method} {uri} {}: {}",
            &body[..body.len().min(60)],
            answer.body
        );
        assert_eq!(answer.body["error"], code, "{method} {uri}: {}", answer.body);
        assert!(answer.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    let unchanged = node.get(&uri).await;
    assert_eq!(unchanged.body["version"], 1, "a refused request changed the session");
    assert_eq!(unchanged.body["data"], json!({"keep":"me"}));
    let metrics = node.get("/metrics").await;
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.lines().any(|line| line == "shoal_sessions_live 1"),
        "no refused create was stored:\n{text}"
    );
    node.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let node = start_node().await;
    let health = node.get("/api/health").await;
    assert_eq!(health.status, StatusCode::OK);
    let body = &health.body;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["mode"], "cluster");
    assert_eq!(body["storage"], "cluster");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let node_id = body["node_id"].as_u64().unwrap();
    assert_eq!(body["instance_id"], format!("shoal-{node_id}"));
    assert_eq!(body["cluster"]["leader_id"], node_id);
    assert_eq!(body["cluster"]["voters"], json!([node_id]));
    assert_eq!(body["cluster"]["learners"], json!([]));
    assert!(body["cluster"]["term"].as_u64().unwrap() >= 1);
    assert!(body["cluster"]["last_applied"].as_u64().unwrap() >= 1);
    assert_eq!(body["cluster"]["members"][0]["alive"], true);

    assert_eq!(node.get("/api/health/ready").await.status, StatusCode::OK);

    node.create("{}").await;
    let metrics = node.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.body.as_str().unwrap();
    for name in [
        "shoal_http_requests_total{",
        "shoal_http_request_duration_seconds_bucket{",
        "shoal_raft_term ",
        "shoal_raft_commit_index ",
        "shoal_raft_applied_index ",
        "shoal_sessions_live ",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    assert!(text.contains(r#"route="/api/sessions""#), "{text}");
    node.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn reads_slide_the_expiry_and_unused_sessions_expire() {
    let node = start_node().await;
    let created = node.create(r#"{"ttl_secs":1}"#).await;
    let uri = format!("/api/sessions/{}", created.body["id"].as_str().unwrap());
    let first_deadline = created.body["expires_at"].as_str().unwrap().to_string();

    // Used more often than its TTL, the session outlives it: each read queues a touch.
    let started = std::time::Instant::now();
    let mut last = node.get(&uri).await;
    while started.elapsed() < Duration::from_millis(2500) {
        assert_eq!(last.status, StatusCode::OK, "a session in use expired: {}", last.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = node.get(&uri).await;
    }
    assert!(last.body["expires_at"].as_str().unwrap() > first_deadline.as_str());

    // Polled less often than its TTL, it expires between two polls.
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let answer = node.get(&uri).await;
        if answer.status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "session did not expire: {}",
            answer.body
        );
    }
    node.node.shutdown().await.unwrap();
}

async fn wait_for_status(node: &TestNode, uri: &str, status: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let answer = node.get(uri).await;
        if answer.body["status"] == status {
            return answer.body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{uri} never became {status}: {}",
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn search_validation_names_the_field_and_starts_nothing() {
    let node = start_node().await;
    let cases = [
        (r#"{"ufs":[],"date_from":"2025-01-01","date_to":"2025-01-31"}"#, "ufs"),
        (r#"{"ufs":["SP","ZZ"],"date_from":"2025-01-01","date_to":"2025-01-31"}"#, "ufs"),
        (r#"{"ufs":["SP","SP"],"date_from":"2025-01-01","date_to":"2025-01-31"}"#, "ufs"),
        (r#"{"ufs":["SP"],"date_from":"01/01/2025","date_to":"2025-01-31"}"#, "date_from"),
        (r#"{"ufs":["SP"],"date_from":"2025-01-01","date_to":"2025-02-30"}"#, "date_to"),
        (r#"{"ufs":["SP"],"date_from":"2025-02-01","date_to":"2025-01-31"}"#, "date_to"),
        (r#"{"ufs":["SP"],"date_from":"2024-01-01","date_to":"2025-01-31"}"#, "date_to"),
        (
            r#"{"ufs":["SP"],"date_from":"2025-01-01","date_to":"2025-01-31","source":"ftp"}"#,
            "source",
        ),
        (r#"{"ufs":"SP","date_from":"2025-01-01","date_to":"2025-01-31"}"#, "ufs"),
        (r#"{"date_from":"2025-01-01","date_to":"2025-01-31"}"#, "ufs"),
    ];
    for (body, field) in cases {
        let answer = node.call(Method::POST, "/api/searches", &[], body).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
        let message = answer.body["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: message {message:?} does not name {field}");
    }
    let keywords: Vec<String> = (0..21).map(|n| format!("k{n}")).collect();
    let body =
        json!({"ufs":["SP"],"date_from":"2025-01-01","date_to":"2025-01-31","keywords":keywords});
    let answer = node.call(Method::POST, "/api/searches", &[], &body.to_string()).await;
    assert!(answer.body["message"].as_str().unwrap().contains("keywords"), "{}", answer.body);
    let malformed = node.call(Method::POST, "/api/searches", &[], "{").await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "invalid_json");

    let health = node.get("/api/health").await;
    assert_eq!(
        health.body["thread_pool_stats"]["completed"], 0,
        "a refused search ran: {}",
        health.body
    );
    assert_eq!(health.body["thread_pool_stats"]["workers"], 10);
    node.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_search_runs_to_completion_and_can_wait() {
    let node = start_node().await;
    let body = r#"{"ufs":["SP","RJ","MG"],"date_from":"2025-01-01","date_to":"2025-01-31","keywords":["UNIFORME"]}"#;
    let started = node.call(Method::POST, "/api/searches", &[], body).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let id = started.body["id"].as_str().unwrap();
    assert_eq!(started.body["status_url"], format!("/api/searches/{id}"));
    assert_eq!(started.body["events_url"], format!("/api/searches/{id}/events"));
    let done = wait_for_status(&node, &format!("/api/searches/{id}"), "completed").await;
    assert_eq!(
        (done["total_parts"].as_u64(), done["completed_parts"].as_u64()),
        (Some(3), Some(3))
    );
    let per_part: u64 =
        ["SP", "RJ", "MG"].iter().map(|uf| done["parts"][uf]["records"].as_u64().unwrap()).sum();
    assert_eq!(done["result"]["total_records"].as_u64(), Some(per_part));
    assert!(per_part > 0);
    assert_eq!(done["attempt"], 1);

    let waited = node.call(Method::POST, "/api/searches?wait=true", &[], body).await;
    assert_eq!(waited.status, StatusCode::OK, "{}", waited.body);
    assert_eq!(waited.body["status"], "completed");
    assert_eq!(
        waited.body["result"]["total_records"], done["result"]["total_records"],
        "same inputs, same records"
    );

    let again = node.call(Method::DELETE, &format!("/api/searches/{id}"), &[], "").await;
    assert_error(&again, StatusCode::CONFLICT, "finished");
    let unknown = node.get("/api/searches/0123").await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
    let stats = node.get("/api/health").await.body["thread_pool_stats"].clone();
    assert_eq!(
        (stats["completed"].as_u64(), stats["rejected"].as_u64()),
        (Some(6), Some(0)),
        "{stats}"
    );
    node.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn cancel_stops_a_running_search_promptly() {
    let node =
        start_node_with(|config| config.searches.sample_page_delay = Duration::from_millis(500))
            .await;
    let body = r#"{"ufs":["SP","RJ"],"date_from":"2025-01-01","date_to":"2025-12-31"}"#;
    let started = node.call(Method::POST, "/api/searches", &[], body).await;
    let uri = format!("/api/searches/{}", started.body["id"].as_str().unwrap());
    wait_for_status(&node, &uri, "running").await;
    let cancelled = node.call(Method::DELETE, &uri, &[], "").await;
    assert_eq!(cancelled.status, StatusCode::ACCEPTED, "{}", cancelled.body);
    let began = std::time::Instant::now();
    let done = wait_for_status(&node, &uri, "cancelled").await;
    assert!(began.elapsed() < Duration::from_secs(2), "cancel took {:?}", began.elapsed());
    assert!(done["result"].is_null());
    node.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let node = start_node_with(|config| {
        config.searches.workers = 1;
        config.searches.queue_capacity = 2;
        config.searches.sample_page_delay = Duration::from_millis(300);
    })
    .await;
    let body = r#"{"ufs":["SP","RJ","MG"],"date_from":"2025-01-01","date_to":"2025-12-31"}"#;
    let refused = node.call(Method::POST, "/api/searches", &[], body).await;
    assert_error(&refused, StatusCode::SERVICE_UNAVAILABLE, "queue_full");
    assert_eq!(refused.headers[header::RETRY_AFTER], "1");
    let fits = r#"{"ufs":["SP","RJ"],"date_from":"2025-01-01","date_to":"2025-12-31"}"#;
    assert_eq!(
        node.call(Method::POST, "/api/searches", &[], fits).await.status,
        StatusCode::ACCEPTED
    );
    let stats = node.get("/api/health").await.body["thread_pool_stats"].clone();
    assert_eq!(stats["rejected"], 1, "{stats}");
    let metrics = node.get("/metrics").await;
    assert!(
        metrics.body.as_str().unwrap().contains("shoal_pool_rejected_total"),
        "{}",
        metrics.body
    );
    node.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn trackers_for_external_workers() {
    let node = start_node().await;
    let created =
        node.call(Method::POST, "/api/trackers", &[], r#"{"total":3,"label":"import"}"#).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(created.body["status"], "running");
    let events = format!("/api/trackers/{id}/events");
    let progress =
        node.call(Method::POST, &events, &[], r#"{"type":"progress","data":{"done":1}}"#).await;
    assert_eq!(progress.status, StatusCode::ACCEPTED, "{}", progress.body);
    assert_eq!(progress.body["seq"], 1);
    let bad = node.call(Method::POST, &events, &[], r#"{"type":"exploded"}"#).await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let done =
        node.call(Method::POST, &events, &[], r#"{"type":"completed","data":{"rows":42}}"#).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let state = node.get(&format!("/api/trackers/{id}")).await;
    assert_eq!(state.body["status"], "completed");
    assert_eq!(state.body["result"], json!({"rows":42}));
    assert_eq!(state.body["params"]["label"], "import");
    let late = node.call(Method::POST, &events, &[], r#"{"type":"progress"}"#).await;
    assert_error(&late, StatusCode::CONFLICT, "finished");
    for body in [r#"{"total":0}"#, r#"{"label":"x"}"#, r#"{"total":-1}"#] {
        let answer = node.call(Method::POST, "/api/trackers", &[], body).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    }
    node.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn completed_searches_link_a_signed_excel_download() {
    let node = start_node().await;
    let body = r#"{"ufs":["SP","RJ"],"date_from":"2025-01-01","date_to":"2025-03-31","keywords":["uniforme"]}"#;
    let done = node.call(Method::POST, "/api/searches?wait=true", &[], body).await;
    assert_eq!(done.body["status"], "completed", "{}", done.body);
    let total = done.body["result"]["total_records"].as_u64().unwrap() as usize;
    let download = &done.body["result"]["download"];
    let url = download["url"].as_str().unwrap();
    let report_id = download["id"].as_str().unwrap();
    assert!(url.starts_with(&format!("/api/downloads/{report_id}?expires=")), "{url}");
    assert!(download["expires_at"].as_str().unwrap().ends_with('Z'));

    let (status, headers, bytes) = node.get_raw(url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    let disposition = headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"shoal_")
            && disposition.ends_with(".xlsx\"")
    );
    let mut workbook: calamine::Xlsx<_> = calamine::Xlsx::new(std::io::Cursor::new(bytes)).unwrap();
    use calamine::Reader;
    let rows = workbook.worksheet_range("Resultados").unwrap();
    assert_eq!(rows.height(), total + 1, "a header and one row per record");
    assert!(rows.rows().skip(1).all(|row| row[4] == calamine::Data::String("SP".into())
        || row[4] == calamine::Data::String("RJ".into())));

    let tampered = url.replace("sig=", "sig=00");
    assert_error(&node.get(&tampered).await, StatusCode::FORBIDDEN, "invalid_signature");
    let other_id = url.replace(report_id, &"f".repeat(32));
    assert_error(&node.get(&other_id).await, StatusCode::FORBIDDEN, "invalid_signature");
    assert_error(
        &node.get(&format!("/api/downloads/{report_id}")).await,
        StatusCode::FORBIDDEN,
        "invalid_signature",
    );

    let signer = node.signer();
    let expired = node.get(&signer.link(report_id, 1_000)).await;
    assert_error(&expired, StatusCode::GONE, "expired");
    assert_eq!(expired.body["message"], "download expired or invalid");
    let far = 4_000_000_000;
    assert_error(
        &node.get(&signer.link(&"a".repeat(32), far)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    node.node.shutdown().await.unwrap();
}

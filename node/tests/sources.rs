//! The `pncp` source against a local HTTP server that speaks PNCP's format (pages, 204,
//! a 500 then success, a 429 with Retry-After, bounded concurrency), and the `file` source.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use shoal_node::{Config, Node};
use tower::ServiceExt;

#[derive(Default)]
struct FakePncp {
    requests: Mutex<HashMap<String, usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

fn contratacao(uf: &str, n: usize) -> Value {
    json!({
        "numeroControlePNCP": format!("00000000000191-1-{n:06}/2025"),
        "objetoCompra": if n.is_multiple_of(2) { "Aquisição de UNIFORMES" } else { "Serviços de limpeza" },
        "orgaoEntidade": {"razaoSocial": "Prefeitura"},
        "unidadeOrgao": {"municipioNome": "Capital", "ufSigla": uf},
        "modalidadeNome": "Pregão - Eletrônico",
        "valorTotalEstimado": 1000.0 + n as f64,
        "dataPublicacaoPncp": "2025-01-15T10:00:00",
        "dataAberturaProposta": "2025-01-30T09:00:00",
        "linkSistemaOrigem": "https://compras.example/edital"
    })
}

fn page(uf: &str, total: usize, page: usize) -> Value {
    let pages = total.div_ceil(50);
    let start = (page - 1) * 50;
    let data: Vec<Value> = (start..total.min(start + 50)).map(|n| contratacao(uf, n)).collect();
    json!({"data": data, "totalRegistros": total, "totalPaginas": pages, "numeroPagina": page,
           "paginasRestantes": pages - page, "empty": false})
}

async fn consulta(
    State(fake): State<Arc<FakePncp>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let now = fake.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    fake.max_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(30)).await;
    fake.in_flight.fetch_sub(1, Ordering::SeqCst);

    let well_formed = query
        .get("dataInicial")
        .is_some_and(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
        && query.get("dataFinal").is_some_and(|d| d.len() == 8)
        && query.contains_key("codigoModalidadeContratacao")
        && query.get("tamanhoPagina").map(String::as_str) == Some("50");
    if !well_formed {
        return (StatusCode::BAD_REQUEST, "bad query").into_response();
    }
    let uf = query.get("uf").cloned().unwrap_or_default();
    let number: usize = query.get("pagina").and_then(|p| p.parse().ok()).unwrap_or(0);
    let seen = {
        let mut requests = fake.requests.lock().unwrap();
        let count = requests.entry(uf.clone()).or_default();
        *count += 1;
        *count
    };
    match uf.as_str() {
        "SP" => Json(page("SP", 120, number)).into_response(),
        "RJ" => StatusCode::NO_CONTENT.into_response(),
        "MG" if seen == 1 => (StatusCode::INTERNAL_SERVER_ERROR, "try later").into_response(),
        "MG" => Json(page("MG", 10, number)).into_response(),
        "BA" if seen == 1 => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")], "slow down").into_response()
        }
        "BA" => Json(page("BA", 7, number)).into_response(),
        _ => Json(page(&uf, 60, number)).into_response(),
    }
}

async fn start_fake() -> (String, Arc<FakePncp>) {
    let fake = Arc::new(FakePncp::default());
    let app =
        Router::new().route("/v1/contratacoes/publicacao", get(consulta)).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), fake)
}

async fn start_node(adjust: impl FnOnce(&mut Config)) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default_for_tests(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.raft.heartbeat_interval = Duration::from_millis(50);
    config.raft.election_timeout = Duration::from_millis(150);
    config.searches.pncp_backoff = Duration::from_millis(10);
    adjust(&mut config);
    (Node::start(config).await.unwrap(), dir)
}

async fn search(node: &Node, body: Value) -> Value {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/searches?wait=true")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = node.router().oneshot(request).await.unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn pncp_pages_204_retries_and_bounded_concurrency() {
    let (url, fake) = start_fake().await;
    let (node, _dir) = start_node(|config| {
        config.searches.pncp_url = url;
        config.searches.pncp_concurrency = 2;
    })
    .await;
    let body = json!({"ufs": ["SP", "RJ", "MG", "BA", "PR", "SC"], "date_from": "2025-01-01",
                      "date_to": "2025-01-31", "source": "pncp"});
    let done = search(&node, body).await;
    assert_eq!(done["status"], "completed", "{done}");
    let parts = &done["parts"];
    assert_eq!(
        (parts["SP"]["records"].as_u64(), parts["SP"]["pages"].as_u64()),
        (Some(120), Some(3))
    );
    assert_eq!(parts["RJ"]["records"], 0, "204 means no data");
    assert_eq!(parts["MG"]["records"], 10, "a 500 is retried");
    assert_eq!(parts["BA"]["records"], 7, "a 429 is retried");
    assert_eq!(done["result"]["total_records"], 120 + 10 + 7 + 60 + 60);
    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!((requests["SP"], requests["RJ"], requests["MG"], requests["BA"]), (3, 1, 2, 2));
    assert!(
        fake.max_in_flight.load(Ordering::SeqCst) <= 2,
        "more than --pncp-concurrency requests at once"
    );

    let keywords = json!({"ufs": ["SP"], "date_from": "2025-01-01", "date_to": "2025-01-31",
                          "source": "pncp", "keywords": ["uniforme"]});
    let filtered = search(&node, keywords).await;
    assert_eq!(
        filtered["result"]["total_records"], 60,
        "keywords match case- and accent-insensitively"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn pncp_failing_for_good_fails_the_search() {
    let (node, _dir) =
        start_node(|config| config.searches.pncp_url = "http://127.0.0.1:9".to_string()).await;
    let body = json!({"ufs": ["SP"], "date_from": "2025-01-01", "date_to": "2025-01-31", "source": "pncp"});
    let done = search(&node, body).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["error"].as_str().unwrap().contains("SP"), "{done}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn file_source_reads_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notices.jsonl");
    let lines: Vec<String> = (0..75)
        .map(|n| {
            json!({"control_number": format!("F-{n}"), "object": "Uniformes", "agency": "A", "municipality": "M",
                   "uf": if n < 60 { "SP" } else { "RJ" }, "modality": "Pregão", "estimated_value": 10.0,
                   "published_on": if n % 10 == 0 { "2024-12-31" } else { "2025-01-10" },
                   "opening_on": "2025-01-20", "link": "https://x/1"})
            .to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    let (node, _data) = start_node(|config| config.searches.source_file = Some(path)).await;
    let body = json!({"ufs": ["SP", "RJ"], "date_from": "2025-01-01", "date_to": "2025-01-31", "source": "file"});
    let done = search(&node, body).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["parts"]["SP"]["records"], 54, "60 in SP, 6 of them outside the dates");
    assert_eq!(done["parts"]["SP"]["pages"], 2);
    assert_eq!(done["parts"]["RJ"]["records"], 13);
    node.shutdown().await.unwrap();

    let (plain, _data) = start_node(|_| {}).await;
    let refused = search(&plain, json!({"ufs": ["SP"], "date_from": "2025-01-01", "date_to": "2025-01-31", "source": "file"})).await;
    assert!(refused["message"].as_str().unwrap().starts_with("source:"), "{refused}");
    plain.shutdown().await.unwrap();
}

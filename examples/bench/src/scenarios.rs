//! The scenarios.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::{json, Value};

use crate::stats::{Samples, Summary};
use crate::{Args, Scenario};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("the HTTP client builds")
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_micros() as u64)
}

/// Prints ops/s every second to stderr until `done` is dropped.
fn progress(label: &'static str, counter: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = 0;
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let now = counter.load(Ordering::Relaxed);
            eprintln!("  {label}: {now} done, {} /s", now - last);
            last = now;
        }
    })
}

/// The sessions scenarios: `clients` loops, each on its own sessions, round robin over
/// the nodes.
pub async fn sessions(args: &Args) -> anyhow::Result<Summary> {
    let http = client();
    let data = json!({ "payload": "x".repeat(args.value_bytes) });
    // Seed one session per client, so reads and overwrites have something to work on.
    let mut ids = Vec::with_capacity(args.clients);
    for n in 0..args.clients {
        let node = &args.nodes[n % args.nodes.len()];
        let body: Value = http
            .post(format!("{node}/api/sessions"))
            .json(&json!({ "data": data }))
            .send()
            .await
            .with_context(|| format!("cannot reach {node}"))?
            .json()
            .await?;
        ids.push(body["id"].as_str().context("create answered no id")?.to_string());
    }
    let done = Arc::new(AtomicU64::new(0));
    let reporter = progress("ops", done.clone());
    let deadline = Instant::now() + args.duration();
    let started = Instant::now();
    let per_client_ops = args.ops.map(|ops| ops.div_ceil(args.clients as u64));
    let mut workers = Vec::new();
    for (worker, id) in ids.into_iter().enumerate() {
        let (http, nodes, data, done, scenario) =
            (http.clone(), args.nodes.clone(), data.clone(), done.clone(), args.scenario);
        workers.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut n = 0_u64;
            while Instant::now() < deadline && per_client_ops.is_none_or(|ops| n < ops) {
                let node = &nodes[(worker + n as usize) % nodes.len()];
                let write = match scenario {
                    Scenario::SessionsWrite => true,
                    Scenario::SessionsMixed => n % 10 == 0,
                    _ => false,
                };
                let began = Instant::now();
                let outcome = if write {
                    http.put(format!("{node}/api/sessions/{id}"))
                        .json(&json!({ "data": data }))
                        .send()
                        .await
                } else {
                    http.get(format!("{node}/api/sessions/{id}")).send().await
                };
                match outcome {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        samples.record(began.elapsed());
                    }
                    _ => samples.errors += 1,
                }
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            samples
        }));
    }
    let mut all = Samples::default();
    for worker in workers {
        all.merge(worker.await?);
    }
    reporter.abort();
    let name = match args.scenario {
        Scenario::SessionsWrite => "sessions-write",
        Scenario::SessionsRead => "sessions-read",
        _ => "sessions-mixed",
    };
    Ok(all.summary(name, started.elapsed()))
}

/// Cross-node SSE latency: a tracker on the first node; subscribers on the others follow
/// its events; the publisher posts `rate` events per second stamped with the send time.
pub async fn sse_latency(args: &Args) -> anyhow::Result<Summary> {
    let http = client();
    let publisher = args.nodes[0].clone();
    let others: Vec<String> =
        if args.nodes.len() > 1 { args.nodes[1..].to_vec() } else { args.nodes.clone() };
    let tracker: Value = http
        .post(format!("{publisher}/api/trackers"))
        .json(&json!({ "total": 1, "label": "sse-latency" }))
        .send()
        .await?
        .json()
        .await?;
    let id = tracker["id"].as_str().context("tracker id")?.to_string();

    let received = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::new();
    for n in 0..args.subscribers {
        let url = format!("{}/api/trackers/{id}/events", others[n % others.len()]);
        let received = received.clone();
        subscribers.push(tokio::spawn(async move { subscribe(&url, received).await }));
    }
    // Let every subscriber connect (and its node open the relay) before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let reporter = progress("events received", received.clone());
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    let mut publish_errors = 0_u64;
    let events_url = format!("{publisher}/api/trackers/{id}/events");
    while started.elapsed() < args.duration() {
        ticker.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (http, url) = (http.clone(), events_url.clone());
        tokio::spawn(async move {
            let body = json!({ "type": "progress", "data": { "sent_us": unix_micros() } });
            let _ = http.post(url).json(&body).send().await;
            drop(permit);
        });
    }
    // Wait for the in-flight posts, then end the stream.
    let _ = in_flight.acquire_many(64).await?;
    let finish =
        http.post(&events_url).json(&json!({ "type": "completed", "data": {} })).send().await;
    if !finish.is_ok_and(|response| response.status().is_success()) {
        publish_errors += 1;
    }
    let elapsed = started.elapsed();
    let mut all = Samples::default();
    for subscriber in subscribers {
        all.merge(subscriber.await??);
    }
    all.errors += publish_errors;
    reporter.abort();
    Ok(all.summary("sse-latency", elapsed))
}

/// Follows one SSE stream to its end, recording each progress event's latency.
async fn subscribe(url: &str, received: Arc<AtomicU64>) -> anyhow::Result<Samples> {
    let mut response = client().get(url).timeout(Duration::from_secs(3600)).send().await?;
    let mut samples = Samples::default();
    let mut buffer = String::new();
    while let Some(chunk) = response.chunk().await? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let data =
                block.lines().find_map(|line| line.strip_prefix("data:")).unwrap_or("").trim();
            if let Ok(value) = serde_json::from_str::<Value>(data) {
                if let Some(sent) = value["sent_us"].as_u64() {
                    samples.record(Duration::from_micros(unix_micros().saturating_sub(sent)));
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            if block.contains("event: completed") || block.contains("event: failed") {
                return Ok(samples);
            }
        }
    }
    Ok(samples)
}

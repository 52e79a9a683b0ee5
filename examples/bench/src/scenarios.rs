//! The scenarios.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::{json, Value};

use crate::stats::{Samples, Summary};
use crate::{Args, Scenario, Target};

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

/// Standard base64 (etcd's JSON gateway takes keys and values so).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One key-value service under test: shoal's sessions API, or etcd's JSON gateway with
/// the same keys (`session:<32 hex>`) and values (the session data JSON).
struct Sessions {
    http: reqwest::Client,
    target: Target,
    data: Value,
    ttl_secs: Option<u64>,
}

impl Sessions {
    fn value_b64(&self) -> String {
        base64(self.data.to_string().as_bytes())
    }

    async fn check(response: reqwest::Result<reqwest::Response>) -> anyhow::Result<Value> {
        let response = response?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "answered {status}");
        Ok(response.json().await.unwrap_or(Value::Null))
    }

    /// Creates a session (or etcd key) and returns its id.
    async fn create(&self, node: &str) -> anyhow::Result<String> {
        match self.target {
            Target::Shoal => {
                let mut body = json!({ "data": self.data });
                if let Some(ttl) = self.ttl_secs {
                    body["ttl_secs"] = json!(ttl);
                }
                let request = self.http.post(format!("{node}/api/sessions")).json(&body).send();
                let created = Self::check(request.await).await?;
                Ok(created["id"].as_str().context("create answered no id")?.to_string())
            }
            Target::Etcd => {
                let id = format!("{:032x}", rand_u128());
                self.write(node, &id).await?;
                Ok(id)
            }
        }
    }

    async fn write(&self, node: &str, id: &str) -> anyhow::Result<()> {
        let request = match self.target {
            Target::Shoal => self
                .http
                .put(format!("{node}/api/sessions/{id}"))
                .json(&json!({ "data": self.data })),
            Target::Etcd => self.http.post(format!("{node}/v3/kv/put")).json(&json!({
                "key": base64(format!("session:{id}").as_bytes()),
                "value": self.value_b64(),
            })),
        };
        Self::check(request.send().await).await.map(drop)
    }

    async fn read(&self, node: &str, id: &str) -> anyhow::Result<()> {
        match self.target {
            Target::Shoal => {
                Self::check(self.http.get(format!("{node}/api/sessions/{id}")).send().await)
                    .await
                    .map(drop)
            }
            Target::Etcd => {
                // Linearizable by default, like shoal's reads.
                let body = json!({ "key": base64(format!("session:{id}").as_bytes()) });
                let request = self.http.post(format!("{node}/v3/kv/range")).json(&body);
                let found = Self::check(request.send().await).await?;
                anyhow::ensure!(found["count"].as_str() == Some("1"), "key not found");
                Ok(())
            }
        }
    }
}

/// A random 128-bit number from the clock and a counter (ids only need to be distinct).
fn rand_u128() -> u128 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (u128::from(unix_micros()) << 64) | u128::from(n) | (u128::from(std::process::id()) << 40)
}

/// The sessions scenarios: `clients` loops, each on its own sessions, round robin over
/// the nodes.
pub async fn sessions(args: &Args) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        !(args.target == Target::Etcd && args.scenario == Scenario::SessionsCreate),
        "sessions-create measures TTL churn, which etcd does with leases: not supported"
    );
    let store = Arc::new(Sessions {
        http: client(),
        target: args.target,
        data: json!({ "payload": "x".repeat(args.value_bytes) }),
        ttl_secs: (args.scenario == Scenario::SessionsCreate).then_some(args.ttl_secs),
    });
    // Seed one session per client, so reads and overwrites have something to work on.
    let mut ids = Vec::with_capacity(args.clients);
    for n in 0..args.clients {
        let node = &args.nodes[n % args.nodes.len()];
        ids.push(store.create(node).await.with_context(|| format!("cannot seed on {node}"))?);
    }
    let ids = Arc::new(ids);
    let scenario = args.scenario;
    let (all, elapsed) = run_clients(args, "ops", move |worker, n, node| {
        let (store, ids) = (store.clone(), ids.clone());
        async move {
            let id = &ids[worker];
            let outcome = match scenario {
                Scenario::SessionsWrite => store.write(&node, id).await,
                Scenario::SessionsMixed if n % 10 == 0 => store.write(&node, id).await,
                Scenario::SessionsCreate => store.create(&node).await.map(drop),
                _ => store.read(&node, id).await,
            };
            outcome.is_ok()
        }
    })
    .await?;
    let name = match args.scenario {
        Scenario::SessionsWrite => "sessions-write",
        Scenario::SessionsRead => "sessions-read",
        Scenario::SessionsCreate => "sessions-create",
        _ => "sessions-mixed",
    };
    Ok(all.summary(name, elapsed))
}

/// Runs `--clients` loops of `op(client, n, node)` (true: it succeeded), node after node
/// round robin, for the duration or `--ops` in all, printing progress; returns the
/// latencies of the successful operations and the time taken.
async fn run_clients<F, Fut>(
    args: &Args,
    label: &'static str,
    op: F,
) -> anyhow::Result<(Samples, Duration)>
where
    F: Fn(usize, u64, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let reporter = progress(label, done.clone());
    let deadline = Instant::now() + args.duration();
    let started = Instant::now();
    let per_client_ops = args.ops.map(|ops| ops.div_ceil(args.clients as u64));
    let mut workers = Vec::new();
    for worker in 0..args.clients {
        let (op, nodes, done) = (op.clone(), args.nodes.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut n = 0_u64;
            while Instant::now() < deadline && per_client_ops.is_none_or(|ops| n < ops) {
                let node = nodes[(worker + n as usize) % nodes.len()].clone();
                let began = Instant::now();
                if op(worker, n, node).await {
                    samples.record(began.elapsed());
                } else {
                    samples.errors += 1;
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
    Ok((all, started.elapsed()))
}

/// Concurrent searches to completion: each client starts a search with `?wait=true`
/// (answered when it is done) on the next node, again and again.
pub async fn searches(args: &Args) -> anyhow::Result<Summary> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(600)).build()?;
    let date_to = day_of_2025(args.search_days);
    let body = json!({ "ufs": args.ufs, "date_from": "2025-01-01", "date_to": date_to });
    let (all, elapsed) = run_clients(args, "searches completed", move |_, _, node| {
        let (http, body) = (http.clone(), body.clone());
        async move {
            let answer =
                http.post(format!("{node}/api/searches?wait=true")).json(&body).send().await;
            match answer {
                Ok(response) if response.status().is_success() => {
                    response.json::<Value>().await.is_ok_and(|state| state["status"] == "completed")
                }
                _ => false,
            }
        }
    })
    .await?;
    Ok(all.summary("searches", elapsed))
}

/// Returns day `day` (1-based) of 2025 as `YYYY-MM-DD`.
fn day_of_2025(day: u32) -> String {
    let lengths = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut left = day.clamp(1, 365);
    for (month, length) in lengths.iter().enumerate() {
        if left <= *length {
            return format!("2025-{:02}-{left:02}", month + 1);
        }
        left -= length;
    }
    "2025-12-31".to_string()
}

/// `--connections` idle SSE streams (a tracker that never ends) held open for the
/// duration, spread round robin over the nodes; latency = time to the snapshot event.
pub async fn sse_connections(args: &Args) -> anyhow::Result<Summary> {
    let http = client();
    let tracker: Value = http
        .post(format!("{}/api/trackers", args.nodes[0]))
        .json(&json!({ "total": 1, "label": "sse-connections" }))
        .send()
        .await?
        .json()
        .await?;
    let id = tracker["id"].as_str().context("tracker id")?.to_string();
    let open = Arc::new(AtomicU64::new(0));
    let reporter = progress("streams open", open.clone());
    let started = Instant::now();
    let hold_until = started + args.duration();
    let mut streams = Vec::with_capacity(args.connections);
    // Each stream holds its own connection (HTTP/1.1 opens one per request in flight),
    // as browsers' EventSources do.
    let streaming = reqwest::Client::builder().timeout(Duration::from_secs(3600)).build()?;
    for n in 0..args.connections {
        let url = format!("{}/api/trackers/{id}/events", args.nodes[n % args.nodes.len()]);
        let (open, http) = (open.clone(), streaming.clone());
        streams.push(tokio::spawn(async move {
            let began = Instant::now();
            let mut response = http.get(&url).send().await?;
            anyhow::ensure!(response.status().is_success(), "answered {}", response.status());
            let mut text = String::new();
            while !text.contains("event: snapshot") {
                let chunk = response.chunk().await?.context("the stream ended")?;
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
            let latency = began.elapsed();
            open.fetch_add(1, Ordering::Relaxed);
            let idle = tokio::time::timeout_at(hold_until.into(), async {
                while response.chunk().await?.is_some() {}
                anyhow::Ok(())
            });
            match idle.await {
                Err(_) => Ok(latency), // still open at the end: held
                Ok(_) => anyhow::bail!("the stream ended early"),
            }
        }));
        // Open them steadily rather than all in one burst of SYNs.
        if n % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut all = Samples::default();
    for stream in streams {
        match stream.await? {
            Ok(latency) => all.record(latency),
            Err(_) => all.errors += 1,
        }
    }
    reporter.abort();
    let _ = http
        .post(format!("{}/api/trackers/{id}/events", args.nodes[0]))
        .json(&json!({ "type": "completed", "data": {} }))
        .send()
        .await;
    Ok(all.summary("sse-connections", started.elapsed()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_known_strings() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"session:1"), "c2Vzc2lvbjox");
    }

    #[test]
    fn days_of_2025() {
        assert_eq!(day_of_2025(1), "2025-01-01");
        assert_eq!(day_of_2025(31), "2025-01-31");
        assert_eq!(day_of_2025(32), "2025-02-01");
        assert_eq!(day_of_2025(365), "2025-12-31");
    }
}

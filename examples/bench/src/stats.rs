//! Latency samples and their summary.

use std::time::Duration;

use serde::Serialize;

/// What one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Latencies in microseconds, plus an error count.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    pub micros: Vec<u64>,
    pub errors: u64,
}

impl Samples {
    pub fn record(&mut self, latency: Duration) {
        self.micros.push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
    }

    /// Summarizes the samples taken over `elapsed`.
    pub fn summary(mut self, scenario: &str, elapsed: Duration) -> Summary {
        self.micros.sort_unstable();
        let percentile = |p: f64| -> f64 {
            if self.micros.is_empty() {
                return 0.0;
            }
            let rank = ((p / 100.0) * (self.micros.len() - 1) as f64).round() as usize;
            self.micros[rank] as f64 / 1000.0
        };
        let seconds = elapsed.as_secs_f64();
        Summary {
            scenario: scenario.to_string(),
            ops: self.micros.len() as u64,
            errors: self.errors,
            seconds,
            throughput: self.micros.len() as f64 / seconds.max(1e-9),
            p50_ms: percentile(50.0),
            p90_ms: percentile(90.0),
            p99_ms: percentile(99.0),
            max_ms: percentile(100.0),
        }
    }
}

/// Renders summaries as an aligned table.
pub fn table(summaries: &[Summary]) -> String {
    let mut out = format!(
        "{:<16} {:>9} {:>7} {:>11} {:>9} {:>9} {:>9} {:>9}\n",
        "scenario", "ops", "errors", "ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for s in summaries {
        out.push_str(&format!(
            "{:<16} {:>9} {:>7} {:>11.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
            s.scenario, s.ops, s.errors, s.throughput, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let mut samples = Samples::default();
        for ms in 1..=100 {
            samples.record(Duration::from_millis(ms));
        }
        let summary = samples.summary("t", Duration::from_secs(2));
        assert_eq!((summary.ops, summary.p50_ms, summary.max_ms), (100, 51.0, 100.0));
        assert_eq!(summary.p99_ms, 99.0);
        assert_eq!(summary.throughput, 50.0);
    }
}

//! Builds one Excel report of N rows (default 100,000) the way a finished search does,
//! and prints how long it took and the process's peak memory (VmHWM).
//!
//! ```sh
//! cargo run --release -p shoal-node --example report_build -- 100000
//! ```

use std::time::Instant;

use shoal_node::jobs::{Notice, SearchParams};
use shoal_node::reports::{build, ReportInput};

/// Returns a `/proc/self/status` field in KiB (Linux).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rows: usize =
        std::env::args().nth(1).map(|rows| rows.parse()).transpose()?.unwrap_or(100_000);
    let ufs = ["SP", "RJ", "MG", "BA", "PR", "RS", "SC", "GO", "PE", "CE"];
    let notices: Vec<Notice> = (0..rows)
        .map(|n| Notice {
            control_number: format!("{:014}-1-{:06}/2025", n * 7919 % 99_999_999_999_999, n),
            object: format!("Aquisição de uniformes escolares e materiais de expediente, lote {n}"),
            agency: format!("Prefeitura Municipal de Exemplo {}", n % 500),
            municipality: format!("Município {}", n % 500),
            uf: ufs[n % ufs.len()].to_string(),
            modality: "Pregão - Eletrônico".to_string(),
            estimated_value: 1000.0 + (n % 10_000) as f64 * 37.5,
            published_on: 20_089 + (n % 180) as i64,
            opening_on: 20_099 + (n % 180) as i64,
            link: format!("https://pncp.gov.br/app/editais/{n}"),
        })
        .collect();
    let params = SearchParams {
        ufs: ufs.iter().map(|uf| uf.to_string()).collect(),
        date_from: "2025-01-01".to_string(),
        date_to: "2025-06-30".to_string(),
        keywords: vec!["uniforme".to_string()],
        source: "sample".to_string(),
    };
    let before_kib = status_kib("VmRSS:").unwrap_or(0);
    let started = Instant::now();
    let input = ReportInput {
        search_id: "0123456789abcdef0123456789abcdef",
        params: &params,
        notices: &notices,
        generated_at_ms: 1_767_225_600_000,
        instance_id: "bench",
    };
    let bytes = build(&input)?;
    let elapsed = started.elapsed();
    let peak_kib = status_kib("VmHWM:").unwrap_or(0);
    println!(
        "report_build: {rows} rows, {} bytes, {:.0} ms, peak RSS {:.1} MiB (rows in memory before: {:.1} MiB, so the build added at most {:.1} MiB)",
        bytes.len(),
        elapsed.as_secs_f64() * 1000.0,
        peak_kib as f64 / 1024.0,
        before_kib as f64 / 1024.0,
        peak_kib.saturating_sub(before_kib) as f64 / 1024.0,
    );
    Ok(())
}

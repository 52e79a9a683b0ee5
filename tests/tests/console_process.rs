//! The web console in a real browser (issue 19): headless Chromium from Debian's packages,
//! driven by Selenium with the system's chromedriver (`tests/python/console_browser.py`),
//! opens the console through nginx in front of three nodes, starts a search of three UFs
//! from the form, and sees each UF's bar reach 100 % and the download link appear while
//! the node serving the page's event stream is SIGKILLed mid-search; the cluster view
//! shows that node dead; the page fits 375 px, is reachable by keyboard, and the browser
//! logs no error but the killed node's. Screenshots of each view are kept in
//! `target/test-output/console/`.
//!
//! `scripts/test` installs chromium, chromium-driver, nginx and selenium and runs this
//! test; plain `cargo test` skips it as ignored.

use std::path::Path;
use std::time::Duration;

use anyhow::ensure;
use shoal_tests::balancer::start_nginx;
use shoal_tests::python::run_script;
use shoal_tests::{free_port, get_json, wait_until, TestCluster};

const FORM: Duration = Duration::from_secs(40);
/// How long the browser script may run, all its steps together.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

#[tokio::test]
#[ignore = "needs chromium, chromium-driver, nginx and selenium: scripts/test installs them \
            and runs this test"]
async fn the_console_follows_a_search_to_completed_while_its_stream_node_dies() -> anyhow::Result<()>
{
    shoal_tests::init_test_tracing();
    for binary in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        ensure!(Path::new(binary).is_file(), "{binary} is missing: scripts/test installs it");
    }
    let dir = tempfile::tempdir()?;
    // The sample source's default 250 ms a page: a year of notices is about 24 pages per
    // UF, several seconds in which to kill the node that streams them.
    let mut cluster = TestCluster::start(dir.path(), 3, &[])?;
    cluster.wait_converged(&[0, 1, 2], 3, FORM).await?;
    let ports: Vec<u16> = cluster.nodes.iter().map(|node| node.port).collect();
    let listen = free_port();
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;
    let format = "$upstream_addr $request_method $request_uri $status";
    let _nginx = start_nginx(&nginx_dir, &ports, listen, Some(format))?;
    let lb = format!("http://127.0.0.1:{listen}");
    let health_url = format!("{lb}/api/health");
    wait_until("nginx answers", FORM, || {
        let url = health_url.clone();
        async move { Ok(get_json(&url).await.is_ok()) }
    })
    .await?;

    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-output/console");
    std::fs::create_dir_all(&screenshots)?;
    let access_log = nginx_dir.join("access.log");
    let nodes: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| format!("{}={}", node.addr(), node.pid().expect("running")))
        .collect();
    let mut args = vec![
        "--url".to_string(),
        lb.clone(),
        "--screenshots".to_string(),
        screenshots.display().to_string(),
        "--access-log".to_string(),
        access_log.display().to_string(),
        "--deadline".to_string(),
        (SCRIPT_DEADLINE.as_secs() - 30).to_string(),
    ];
    for node in &nodes {
        args.extend(["--node".to_string(), node.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_script(dir.path(), "console_browser.py", &args, &[], SCRIPT_DEADLINE).await?;
    ensure!(
        run.status.success(),
        "the browser run failed:\n{run}\n{}",
        cluster.log_tails(&[0, 1, 2])
    );
    ensure!(run.stdout.contains("console browser test: ok"), "no success line:\n{run}");

    // The script killed one node (by pid): the other two carry on as a cluster.
    let killed: Vec<usize> = (0..3).filter(|index| cluster.nodes[*index].has_exited()).collect();
    ensure!(killed.len() == 1, "one node should have been killed, not {killed:?}:\n{run}");
    let alive: Vec<usize> = (0..3).filter(|index| !killed.contains(index)).collect();
    cluster.wait_converged(&alive, 3, FORM).await?;
    for view in ["cluster.png", "search.png", "cluster-node-down.png", "narrow.png"] {
        let size = std::fs::metadata(screenshots.join(view))?.len();
        ensure!(size > 1000, "{view} is {size} bytes");
    }
    println!("{}", run.stdout);
    Ok(())
}

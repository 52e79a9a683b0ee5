//! The deployment files, checked offline by the tools that understand them:
//! `deploy/shoal.service` by `systemd-analyze verify` and its offline security review,
//! every manifest in `deploy/k8s` by `kubernetes-validate --strict` against Kubernetes
//! 1.30's schemas, and the manifests against each other (the names, selectors, ports
//! and settings a forming cluster rests on). Each check is also handed a broken copy,
//! which it must refuse, so that a check that cannot fail does not pass for one.
//!
//! Needs systemd-analyze (Debian's systemd) and kubernetes-validate (PyPI; it brings
//! PyYAML, which reads the manifests here): `scripts/test` installs them and runs these
//! tests; plain `cargo test` skips them as ignored and runs only the checks that need no
//! tool.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, ensure, Context};
use serde_json::Value;
use shoal_tests::{binary_on_path, shoal_binary};

/// The Kubernetes version whose schemas the manifests must satisfy; the oldest they
/// support (preStop's sleep action is on by default from 1.30).
const KUBERNETES_VERSION: &str = "1.30.0";

/// Where the unit and the images install the binary.
const UNIT_EXEC_START: &str = "ExecStart=/usr/local/bin/shoal";

/// Highest `systemd-analyze security` exposure the unit may have, in tenths (its
/// `--threshold` unit): 2.0 of 10, so that hardening taken out shows up here.
const UNIT_EXPOSURE_THRESHOLD: &str = "20";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read_deploy_file(name: &str) -> anyhow::Result<String> {
    let path = deploy_dir().join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

fn stdout_and_stderr(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn require_tool(binary: &str, install: &str) -> anyhow::Result<()> {
    ensure!(
        binary_on_path(binary).is_some(),
        "{binary} is not installed: {install} (scripts/test does this)"
    );
    Ok(())
}

/// Returns `(section, key, value)` for every directive of a unit file.
fn unit_directives(unit: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut directives = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') && line.ends_with(']') {
            section = line[1..line.len() - 1].to_string();
        } else if let Some((key, value)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            directives.push((section.clone(), key.trim().to_string(), value.trim().to_string()));
        }
    }
    directives
}

fn is_variable(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The contracts between the unit, its EnvironmentFile and the node, which no tool knows.
#[test]
fn unit_and_environment_file_fit_the_node() -> anyhow::Result<()> {
    let directives = unit_directives(&read_deploy_file("shoal.service")?);
    let service = |key: &str| -> Vec<&str> {
        directives
            .iter()
            .filter(|(section, name, _)| section == "Service" && name == key)
            .map(|(_, _, value)| value.as_str())
            .collect()
    };
    // The node sends READY=1 itself once it can serve.
    assert_eq!(service("Type"), ["notify"]);
    assert_eq!(service("NotifyAccess"), ["main"]);
    assert_eq!(service("ExecStart"), [UNIT_EXEC_START.trim_start_matches("ExecStart=")]);
    // ProtectSystem=strict leaves only the StateDirectory writable: the data dir must be it.
    assert_eq!(service("ProtectSystem"), ["strict"]);
    let [state_directory] = service("StateDirectory")[..] else {
        bail!("the unit needs exactly one StateDirectory=")
    };
    let data_dir = format!("SHOAL_DATA_DIR=%S/{state_directory}");
    assert!(service("Environment").contains(&data_dir.as_str()), "the unit must set {data_dir}");
    assert_eq!(service("EnvironmentFile"), ["-/etc/shoal/shoal.env"]);

    // systemd reads the EnvironmentFile as NAME=value lines and expands nothing in them.
    let example = read_deploy_file("shoal.env.example")?;
    assert!(example.starts_with("# /etc/shoal/shoal.env"), "the example names where it goes");
    for line in example.lines().map(str::trim) {
        // A commented-out setting is checked like one that is set.
        let (commented, setting) = match line.strip_prefix('#') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let Some((name, value)) = setting.split_once('=').filter(|(name, _)| is_variable(name))
        else {
            assert!(commented || line.is_empty(), "not NAME=value: {line}");
            continue;
        };
        assert!(name == "INSTANCE_ID" || name.starts_with("SHOAL_"), "not a shoal setting: {line}");
        assert!(!value.contains(['$', '%']), "an EnvironmentFile expands nothing: {line}");
    }
    Ok(())
}

/// Returns `Ok` when `systemd-analyze verify` finds nothing wrong with `unit`. It exits 0
/// on unknown directives and values it cannot parse, only warning about them, so any
/// line it prints about the unit's file counts as a failure too.
fn verify_unit(unit: &Path) -> anyhow::Result<()> {
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--generators=no"])
        .arg(unit)
        .output()
        .context("running systemd-analyze verify")?;
    let text = stdout_and_stderr(&output);
    let file_name = unit.file_name().and_then(|name| name.to_str()).context("unit file name")?;
    let complaints = text.lines().filter(|line| line.contains(file_name)).count();
    ensure!(
        output.status.success() && complaints == 0,
        "systemd-analyze verify {} ({}):\n{text}",
        unit.display(),
        output.status
    );
    Ok(())
}

/// Writes `deploy/shoal.service`, changed by `edit`, to `dir/shoal.service` with
/// ExecStart at the built binary (verify checks that the binary exists).
fn unit_copy(dir: &Path, edit: impl FnOnce(String) -> String) -> anyhow::Result<PathBuf> {
    let unit = read_deploy_file("shoal.service")?;
    ensure!(unit.matches(UNIT_EXEC_START).count() == 1, "the unit has one {UNIT_EXEC_START}");
    let unit = unit.replace(UNIT_EXEC_START, &format!("ExecStart={}", shoal_binary().display()));
    std::fs::create_dir_all(dir)?;
    let path = dir.join("shoal.service");
    std::fs::write(&path, edit(unit))?;
    Ok(path)
}

#[test]
#[ignore = "needs systemd-analyze (Debian's systemd); scripts/test installs it and runs this test"]
fn systemd_unit_verifies() -> anyhow::Result<()> {
    require_tool("systemd-analyze", "apt-get install systemd")?;
    let dir = tempfile::tempdir()?;

    let unit = unit_copy(&dir.path().join("as-shipped"), |unit| unit)?;
    verify_unit(&unit)?;
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--threshold={UNIT_EXPOSURE_THRESHOLD}"))
        .arg(&unit)
        .output()?;
    assert!(
        security.status.success(),
        "the unit's exposure is above {UNIT_EXPOSURE_THRESHOLD}/100:\n{}",
        stdout_and_stderr(&security)
    );

    // The check can fail: a misspelled directive (only a warning to systemd) ...
    let misspelled = unit_copy(&dir.path().join("misspelled"), |unit| {
        unit.replacen("RestartSec=", "RestartSecs=", 1)
    })?;
    let error = verify_unit(&misspelled).expect_err("a misspelled directive is refused");
    assert!(format!("{error:#}").contains("RestartSecs"), "{error:#}");
    // ... and a binary that is not there (an error).
    let missing = unit_copy(&dir.path().join("missing-binary"), |unit| {
        let binary = shoal_binary().display().to_string();
        unit.replace(&format!("ExecStart={binary}"), &format!("ExecStart={binary}-missing"))
    })?;
    verify_unit(&missing).expect_err("a missing binary is refused");
    Ok(())
}

fn k8s_dir() -> PathBuf {
    deploy_dir().join("k8s")
}

/// Returns the manifests in `deploy/k8s` (every YAML file but kustomization.yaml), sorted.
fn manifest_files() -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(k8s_dir())? {
        let path = entry?.path();
        let is_yaml = path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml");
        if is_yaml && path.file_name().is_some_and(|name| name != "kustomization.yaml") {
            files.push(path);
        }
    }
    files.sort();
    ensure!(!files.is_empty(), "no manifests in {}", k8s_dir().display());
    Ok(files)
}

/// Returns `Ok` when every object in `files` validates against the schemas of
/// [`KUBERNETES_VERSION`], unknown fields refused. An object whose kind or apiVersion
/// has no schema is only a warning to kubernetes-validate (exit 0), so warnings fail too.
fn validate_manifests(files: &[PathBuf]) -> anyhow::Result<()> {
    let output = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .args(["--kubernetes-version", KUBERNETES_VERSION])
        .args(files)
        .output()
        .context("running python3 -m kubernetes_validate")?;
    let text = stdout_and_stderr(&output);
    ensure!(
        !text.contains("No module named kubernetes_validate"),
        "kubernetes-validate is not installed: python3 -m pip install kubernetes-validate \
         (scripts/test does this)"
    );
    let refused = text
        .lines()
        .any(|line| ["WARN", "ERROR", "FATAL"].iter().any(|level| line.starts_with(level)));
    ensure!(
        output.status.success() && !refused,
        "kubernetes-validate ({}):\n{text}",
        output.status
    );
    Ok(())
}

/// Returns the objects of a YAML file (every document but empty ones) as JSON.
fn load_yaml(path: &Path) -> anyhow::Result<Vec<Value>> {
    let output = Command::new("python3")
        .arg("-c")
        .arg(
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]\n\
             json.dump(docs, sys.stdout)",
        )
        .arg(path)
        .output()
        .context("running python3 with PyYAML")?;
    ensure!(output.status.success(), "reading {}:\n{}", path.display(), stdout_and_stderr(&output));
    serde_json::from_slice(&output.stdout).context("PyYAML's JSON")
}

fn load_manifests() -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    for file in manifest_files()? {
        objects.extend(load_yaml(&file)?);
    }
    Ok(objects)
}

#[test]
#[ignore = "needs kubernetes-validate (PyPI); scripts/test installs it and runs this test"]
fn kubernetes_manifests_validate() -> anyhow::Result<()> {
    let files = manifest_files()?;
    validate_manifests(&files)?;

    // kustomization.yaml (no schema here) lists exactly the manifests.
    let kustomization = load_yaml(&k8s_dir().join("kustomization.yaml"))?;
    let [kustomization] = &kustomization[..] else { bail!("one Kustomization") };
    assert_eq!(kustomization["kind"], "Kustomization");
    let mut listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .context("resources")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    listed.sort_unstable();
    let present: Vec<String> =
        files.iter().filter_map(|file| file.file_name()?.to_str().map(str::to_string)).collect();
    assert_eq!(listed, present, "kustomization.yaml lists every manifest, once");

    // The check can fail: an unknown field, and a kind without a schema (a typo).
    let dir = tempfile::tempdir()?;
    let service = std::fs::read_to_string(k8s_dir().join("service.yaml"))?;
    for (name, broken) in [
        (
            "unknown-field.yaml",
            service.replacen("  type: ClusterIP", "  type: ClusterIP\n  typo: 1", 1),
        ),
        ("unknown-kind.yaml", service.replacen("kind: Service", "kind: Servise", 1)),
    ] {
        assert_ne!(broken, service, "{name} differs from service.yaml");
        let path = dir.path().join(name);
        std::fs::write(&path, broken)?;
        validate_manifests(&[path]).expect_err(name);
    }
    Ok(())
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    objects
        .iter()
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name}"))
}

/// Returns whether `selector` (a non-empty label map) matches `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|map| !map.is_empty() && map.iter().all(|(key, value)| &labels[key] == value))
}

/// Returns the names a Kubernetes env value refers to as `$(NAME)`.
fn env_references(value: &str) -> Vec<&str> {
    value
        .split("$(")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(name, _)| name))
        .collect()
}

/// Returns what keeps these objects from forming a shoal cluster: each line one problem.
fn cluster_problems(objects: &[Value]) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut check = |holds: bool, problem: &str| {
        if !holds {
            problems.push(problem.to_string());
        }
    };
    let set = find(objects, "StatefulSet", "shoal")?;
    let spec = &set["spec"];
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    check(
        spec["podManagementPolicy"] == "Parallel",
        "podManagementPolicy must be Parallel: no pod is ready before the cluster formed",
    );

    let peer_service_name = spec["serviceName"].as_str().context("serviceName")?;
    let peers = find(objects, "Service", peer_service_name)?;
    check(peers["spec"]["clusterIP"] == "None", "the peer Service must be headless");
    check(
        peers["spec"]["publishNotReadyAddresses"] == true,
        "the peer Service must publish pods that are not ready (they form the cluster)",
    );
    let peer_ports = peers["spec"]["ports"].as_array().cloned().unwrap_or_default();
    for protocol in ["TCP", "UDP"] {
        check(
            peer_ports.iter().any(|port| port["port"] == 8000 && port["protocol"] == protocol),
            &format!("the peer Service needs 8000/{protocol}"),
        );
    }
    let client = find(objects, "Service", "shoal")?;
    check(selects(&spec["selector"]["matchLabels"], labels), "the selector matches the pods");
    check(selects(&peers["spec"]["selector"], labels), "the peer Service selects the pods");
    check(selects(&client["spec"]["selector"], labels), "the client Service selects the pods");
    let budget = objects.iter().find(|object| object["kind"] == "PodDisruptionBudget");
    let budget = budget.context("no PodDisruptionBudget")?;
    check(selects(&budget["spec"]["selector"]["matchLabels"], labels), "the budget selects pods");
    check(budget["spec"]["maxUnavailable"] == 1, "the budget allows one pod down at a time");

    let containers = pod["containers"].as_array().context("containers")?;
    let container = containers.iter().find(|c| c["name"] == "shoal").context("container shoal")?;
    let mut env = std::collections::BTreeMap::new();
    for var in container["env"].as_array().context("env")? {
        let name = var["name"].as_str().context("env name")?;
        let value = var["value"].as_str().unwrap_or_default();
        for reference in env_references(value) {
            // Kubernetes leaves $(NAME) as it is unless NAME is defined earlier.
            check(env.contains_key(reference), &format!("{name} uses $({reference}) undefined"));
        }
        env.insert(name, value);
    }
    let setting = |name: &str| env.get(name).copied().unwrap_or_default();
    check(
        setting("SHOAL_BOOTSTRAP_EXPECT").parse().ok() == spec["replicas"].as_u64(),
        "SHOAL_BOOTSTRAP_EXPECT is the initial replicas",
    );
    check(setting("SHOAL_LEAVE_ON_SHUTDOWN") == "true", "scale-down leaves the membership");
    check(
        setting("SHOAL_PEERS").starts_with(&format!("{peer_service_name}.")),
        "SHOAL_PEERS names the peer Service",
    );
    check(setting("SHOAL_ADVERTISE_ADDR") == "$(POD_IP):8000", "advertise the pod's IP");

    // The data dir is the claim's mount; the secret file is a key of the mounted Secret.
    let mounts = container["volumeMounts"].as_array().cloned().unwrap_or_default();
    let mount_of = |volume: &str| {
        mounts.iter().find(|m| m["name"] == volume).and_then(|m| m["mountPath"].as_str())
    };
    let claims = spec["volumeClaimTemplates"].as_array().cloned().unwrap_or_default();
    check(
        claims.iter().any(|claim| {
            mount_of(claim["metadata"]["name"].as_str().unwrap_or_default())
                == Some(setting("SHOAL_DATA_DIR"))
        }),
        "SHOAL_DATA_DIR is where a volumeClaimTemplate is mounted",
    );
    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    let secret_file_found = volumes.iter().any(|volume| {
        let Some(secret_name) = volume["secret"]["secretName"].as_str() else { return false };
        let Ok(secret) = find(objects, "Secret", secret_name) else { return false };
        let Some(mount) = mount_of(volume["name"].as_str().unwrap_or_default()) else {
            return false;
        };
        let file = setting("SHOAL_CLUSTER_SECRET_FILE");
        file.strip_prefix(mount).and_then(|key| key.strip_prefix('/')).is_some_and(|key| {
            !secret["stringData"][key].is_null() || !secret["data"][key].is_null()
        })
    });
    check(secret_file_found, "SHOAL_CLUSTER_SECRET_FILE is a key of a mounted Secret");

    let ports = container["ports"].as_array().cloned().unwrap_or_default();
    for (probe, path) in [("readinessProbe", "/api/health/ready"), ("livenessProbe", "/api/health")]
    {
        let get = &container[probe]["httpGet"];
        check(get["path"] == path, &format!("{probe} asks {path}"));
        check(
            ports.iter().any(|port| port["name"] == get["port"] && port["protocol"] == "TCP"),
            &format!("{probe} asks a TCP port of the container"),
        );
    }
    let context = &pod["securityContext"];
    check(context["runAsUser"] == 10001 && context["fsGroup"] == 10001, "the image's uid 10001");
    check(
        container["securityContext"]["readOnlyRootFilesystem"] == true,
        "the root file system is read-only",
    );
    Ok(problems)
}

#[test]
#[ignore = "needs python3 with PyYAML (kubernetes-validate brings it); scripts/test installs it and runs this test"]
fn kubernetes_manifests_form_a_cluster() -> anyhow::Result<()> {
    let objects = load_manifests()?;
    let problems = cluster_problems(&objects)?;
    assert!(problems.is_empty(), "the manifests do not form a cluster:\n{}", problems.join("\n"));

    // The check can fail: the two settings without which no cluster ever forms.
    let mut broken = objects.clone();
    for object in &mut broken {
        if object["kind"] == "StatefulSet" {
            object["spec"]["podManagementPolicy"] = "OrderedReady".into();
        }
        if object["kind"] == "Service" && object["spec"]["clusterIP"] == "None" {
            object["spec"]["publishNotReadyAddresses"] = false.into();
        }
    }
    let problems = cluster_problems(&broken)?;
    assert_eq!(problems.len(), 2, "{problems:?}");
    Ok(())
}

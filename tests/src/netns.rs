//! [`Netns`]: nodes in network namespaces of their own, so that the links between chosen
//! nodes can be cut and healed while the test process still reaches every node.
//!
//! Layout, with names unique to the test process (`shl<pid>x<k>`, k counting the
//! networks a process makes) and addresses from 10.213.S.0/24, S chosen so that no
//! interface of the machine uses it:
//!
//! ```text
//! root namespace           bridge namespace <p>b            node namespace <p>n<i>
//! <p>h 10.213.S.254  ---  host [br0] n<i>  ----------------  eth0 10.213.S.<i+1>
//! ```
//!
//! The bridge has a namespace of its own because the root namespace may filter bridged
//! traffic (Docker sets `bridge-nf-call-iptables` with a FORWARD policy of DROP). A cut
//! is an iptables rule in a node's namespace that drops what arrives from another node
//! ([`Cut`], removed when it drops); the test process's own traffic is never cut. Dropping
//! the network kills whatever still runs in its namespaces and deletes them; a network
//! left by a test process that died is deleted by the next one.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

use crate::{binary_on_path, Placement};

/// The port every node listens on, each at its own address.
pub const NODE_PORT: u16 = 8000;

const NAME_PREFIX: &str = "shl";

/// Network namespaces for nodes, joined by one bridge.
#[derive(Debug)]
pub struct Netns {
    prefix: String,
    subnet: u8,
    ip: PathBuf,
    iptables: PathBuf,
    hosts: usize,
}

/// Returns the path of a system binary, looking in the sbin directories too.
fn system_binary(name: &str) -> Option<PathBuf> {
    binary_on_path(name).or_else(|| {
        ["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .map(|dir| PathBuf::from(dir).join(name))
            .find(|path| path.is_file())
    })
}

/// Returns whether this process runs as root.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn run(program: &PathBuf, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !output.status.success() {
        bail!(
            "{} {} failed: {}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Returns the process id a name of ours carries, if `name` is one of ours.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (pid, _) = rest.split_once('x')?;
    pid.parse().ok()
}

impl Netns {
    /// Makes namespaces for `hosts` nodes; fails with what is missing when this machine
    /// cannot (not root, no `ip` or `iptables`).
    pub fn create(hosts: usize) -> anyhow::Result<Self> {
        if !is_root() {
            bail!("partitions need network namespaces, which need root: run the test as root (scripts/test does, in CI)");
        }
        let missing = |name: &str, package: &str| {
            system_binary(name).with_context(|| {
                format!(
                    "{name} is not installed: apt-get install {package} (scripts/test does this)"
                )
            })
        };
        let ip = missing("ip", "iproute2")?;
        let iptables = missing("iptables", "iptables")?;
        static NETWORKS: AtomicU32 = AtomicU32::new(0);
        let number = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("{NAME_PREFIX}{pid}x{number}");
        remove_stale(&ip);
        let subnet = free_subnet(&ip, pid.wrapping_mul(4).wrapping_add(number))?;
        let mut network = Self { prefix, subnet, ip, iptables, hosts: 0 };
        network.make_bridge()?;
        for _ in 0..hosts {
            network.add_host()?;
        }
        Ok(network)
    }

    fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        run(&self.ip, args)
    }

    fn bridge_namespace(&self) -> String {
        format!("{}b", self.prefix)
    }

    fn namespace(&self, host: usize) -> String {
        format!("{}n{host}", self.prefix)
    }

    fn root_link(&self) -> String {
        format!("{}h", self.prefix)
    }

    /// Returns the address of host `host`.
    pub fn address(&self, host: usize) -> String {
        format!("10.213.{}.{}", self.subnet, host + 1)
    }

    fn make_bridge(&mut self) -> anyhow::Result<()> {
        let bridge = self.bridge_namespace();
        let root_link = self.root_link();
        self.ip(&["netns", "add", &bridge])?;
        self.ip(&["-n", &bridge, "link", "set", "lo", "up"])?;
        self.ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        self.ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
        self.ip(&[
            "link", "add", &root_link, "type", "veth", "peer", "name", "host", "netns", &bridge,
        ])?;
        let root_address = format!("10.213.{}.254/24", self.subnet);
        self.ip(&["addr", "add", &root_address, "dev", &root_link])?;
        self.ip(&["link", "set", &root_link, "up"])?;
        self.ip(&["-n", &bridge, "link", "set", "dev", "host", "master", "br0"])?;
        self.ip(&["-n", &bridge, "link", "set", "dev", "host", "up"])?;
        Ok(())
    }

    /// Makes one more namespace and returns where its node goes.
    pub fn add_host(&mut self) -> anyhow::Result<Placement> {
        let host = self.hosts;
        if host >= 250 {
            bail!("a network holds at most 250 hosts");
        }
        let namespace = self.namespace(host);
        let bridge = self.bridge_namespace();
        let port = format!("n{host}");
        self.ip(&["netns", "add", &namespace])?;
        self.hosts += 1;
        self.ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        self.ip(&[
            "-n", &bridge, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &namespace,
        ])?;
        self.ip(&["-n", &bridge, "link", "set", "dev", &port, "master", "br0"])?;
        self.ip(&["-n", &bridge, "link", "set", "dev", &port, "up"])?;
        let address = format!("{}/24", self.address(host));
        self.ip(&["-n", &namespace, "addr", "add", &address, "dev", "eth0"])?;
        self.ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
        Ok(self.placement(host))
    }

    /// Returns where host `host`'s node listens and how to start it there.
    pub fn placement(&self, host: usize) -> Placement {
        Placement {
            host: self.address(host),
            port: NODE_PORT,
            launcher: vec![
                self.ip.display().to_string(),
                "netns".to_string(),
                "exec".to_string(),
                self.namespace(host),
            ],
        }
    }

    /// Drops, at host `to`, every packet from host `from`, until the returned cut drops.
    pub fn cut(&self, to: usize, from: usize) -> anyhow::Result<Cut> {
        let cut = Cut {
            ip: self.ip.clone(),
            iptables: self.iptables.clone(),
            namespace: self.namespace(to),
            source: self.address(from),
        };
        cut.iptables("-A")?;
        Ok(cut)
    }
}

/// One direction of a cut link: an iptables rule in a host's namespace, removed on drop.
#[derive(Debug)]
pub struct Cut {
    ip: PathBuf,
    iptables: PathBuf,
    namespace: String,
    source: String,
}

impl Cut {
    fn iptables(&self, action: &str) -> anyhow::Result<String> {
        let iptables = self.iptables.display().to_string();
        let args = [
            "netns",
            "exec",
            &self.namespace,
            &iptables,
            "-w",
            action,
            "INPUT",
            "-s",
            &self.source,
            "-j",
            "DROP",
        ];
        run(&self.ip, &args)
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        if let Err(error) = self.iptables("-D") {
            eprintln!("could not heal a cut link: {error:#}");
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let namespaces: Vec<String> = (0..self.hosts)
            .map(|host| self.namespace(host))
            .chain([self.bridge_namespace()])
            .collect();
        remove(&self.ip, &namespaces, Some(&self.root_link()));
    }
}

/// Kills what runs in `namespaces` (nodes this harness started there), deletes the root
/// end of the bridge link and the namespaces.
fn remove(ip: &PathBuf, namespaces: &[String], root_link: Option<&str>) {
    for namespace in namespaces {
        let pids = run(ip, &["netns", "pids", namespace]).unwrap_or_default();
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    if let Some(link) = root_link {
        let _ = run(ip, &["link", "del", link]);
    }
    for namespace in namespaces {
        if let Err(error) = run(ip, &["netns", "del", namespace]) {
            eprintln!("could not delete network namespace {namespace}: {error:#}");
        }
    }
}

/// Deletes namespaces and links of ours whose test process is gone (one killed before
/// its networks dropped).
fn remove_stale(ip: &PathBuf) {
    let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    let listed = run(ip, &["netns", "list"]).unwrap_or_default();
    let stale: Vec<String> = listed
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| owner_pid(name).is_some_and(|pid| !alive(pid)))
        .map(str::to_string)
        .collect();
    let links = run(ip, &["-o", "link", "show"]).unwrap_or_default();
    let stale_links: BTreeSet<String> = links
        .lines()
        .filter_map(|line| line.split(": ").nth(1)?.split('@').next())
        .filter(|name| owner_pid(name).is_some_and(|pid| !alive(pid)))
        .map(str::to_string)
        .collect();
    if !stale.is_empty() || !stale_links.is_empty() {
        eprintln!(
            "removing network namespaces left by dead test processes: {stale:?} {stale_links:?}"
        );
    }
    for link in &stale_links {
        let _ = run(ip, &["link", "del", link]);
    }
    remove(ip, &stale, None);
}

/// Returns a third octet S, starting from `start`, such that no address of this machine
/// is in 10.213.S.0/24.
fn free_subnet(ip: &PathBuf, start: u32) -> anyhow::Result<u8> {
    let addresses = run(ip, &["-4", "-o", "addr", "show"])?;
    let routes = run(ip, &["-4", "route", "show", "table", "all"])?;
    (0..250)
        .map(|offset| ((start + offset) % 250 + 1) as u8)
        .find(|subnet| {
            let taken = format!("10.213.{subnet}.");
            !addresses.contains(&taken) && !routes.contains(&taken)
        })
        .context("every 10.213.S.0/24 is in use on this machine")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_of_ours_have_an_owner() {
        assert_eq!(owner_pid("shl4242x0n2"), Some(4242));
        assert_eq!(owner_pid("shl4242x13h"), Some(4242));
        assert_eq!(owner_pid("shlonk"), None);
        assert_eq!(owner_pid("docker0"), None);
    }
}

//! (I/O: runs `ip`) Pod networking: one Linux bridge owned by this kubelet, and per pod a network
//! namespace with a veth pair into it.
//!
//! The bridge holds the subnet's `.1` (the node's InternalIP and every pod's `hostIP`); pods get
//! `.2` to `.254`. Pods have only the connected /24 route: no default route, no NAT, no
//! forwarding, so nothing can leave the subnet. Pods reach each other over the bridge (layer 2)
//! and the host (the API-server proxy, probes, the demo's curl) at the bridge address.
//!
//! Names: bridge `<bridge>`, namespace `<bridge>-<n>`, host-side veth `<bridge>v<n>` for pod
//! address `.n`; everything with the bridge's prefix is this kubelet's and is removed at start
//! and at exit.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use anyhow::{bail, Context};
use tokio::process::Command;

pub struct Network {
    bridge: String,
    base: [u8; 3],
    used: Mutex<BTreeSet<u8>>,
}

/// One pod's network namespace and address.
#[derive(Debug, Clone)]
pub struct PodNet {
    pub netns: String,
    pub ip: Ipv4Addr,
    host_veth: String,
}

/// `ip ARGS`, failing with its stderr.
async fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .context("running `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Network {
    /// Parses `a.b.c.0/24`; only /24 subnets are supported.
    pub fn new(bridge: &str, subnet: &str) -> anyhow::Result<Self> {
        if bridge.is_empty() || bridge.len() > 8 {
            bail!("--bridge must be 1 to 8 characters (veth names derive from it)");
        }
        let Some(net) = subnet.strip_suffix("/24") else {
            bail!("--pod-subnet must be a /24, e.g. 10.241.0.0/24");
        };
        let addr: Ipv4Addr = net.parse().context("--pod-subnet")?;
        let [a, b, c, d] = addr.octets();
        if d != 0 || !addr.is_private() {
            bail!("--pod-subnet must be a private a.b.c.0/24");
        }
        Ok(Network {
            bridge: bridge.to_owned(),
            base: [a, b, c],
            used: Mutex::new(BTreeSet::new()),
        })
    }

    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.base;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// Removes leftovers of an earlier run, then creates the bridge.
    pub async fn setup(&self) -> anyhow::Result<()> {
        self.cleanup().await;
        // A fixed MAC: by default a bridge takes the lowest MAC of its ports, so every new pod
        // could change it and leave other pods' ARP entries for the gateway stale for seconds
        // (probes from the host then time out).
        let [a, b, c] = self.base;
        let mac = format!("02:72:63:{a:02x}:{b:02x}:{c:02x}");
        ip(&[
            "link",
            "add",
            &self.bridge,
            "address",
            &mac,
            "type",
            "bridge",
        ])
        .await?;
        let cidr = format!("{}/24", self.gateway());
        ip(&["addr", "add", &cidr, "dev", &self.bridge]).await?;
        ip(&["link", "set", &self.bridge, "up"]).await?;
        Ok(())
    }

    /// Kills what still runs in our namespaces, deletes them and the bridge. Best effort.
    pub async fn cleanup(&self) {
        let prefix = format!("{}-", self.bridge);
        let list = ip(&["netns", "list"]).await.unwrap_or_default();
        for ns in list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&prefix))
        {
            kill_namespace_processes(ns).await;
            if let Err(e) = ip(&["netns", "del", ns]).await {
                tracing::warn!(netns = ns, error = %e, "removing stale network namespace");
            }
        }
        if ip(&["link", "show", &self.bridge]).await.is_ok() {
            if let Err(e) = ip(&["link", "del", &self.bridge]).await {
                tracing::warn!(bridge = %self.bridge, error = %e, "removing bridge");
            }
        }
    }

    /// A new namespace with the next free address, wired to the bridge.
    pub async fn create_pod_net(&self) -> anyhow::Result<PodNet> {
        let n = {
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            let Some(n) = (2..=254u8).find(|n| !used.contains(n)) else {
                bail!("no free pod address left in the /24");
            };
            used.insert(n);
            n
        };
        let [a, b, c] = self.base;
        let net = PodNet {
            netns: format!("{}-{n}", self.bridge),
            ip: Ipv4Addr::new(a, b, c, n),
            host_veth: format!("{}v{n}", self.bridge),
        };
        if let Err(e) = self.wire(&net).await {
            self.remove_pod_net(&net).await;
            return Err(e);
        }
        Ok(net)
    }

    async fn wire(&self, net: &PodNet) -> anyhow::Result<()> {
        let ns = net.netns.as_str();
        ip(&["netns", "add", ns]).await?;
        ip(&[
            "link",
            "add",
            &net.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        ])
        .await?;
        ip(&["link", "set", &net.host_veth, "master", &self.bridge, "up"]).await?;
        // The MAC follows from the address: a pod re-created at the same IP (a StatefulSet pod
        // keeps its slot) then has the same MAC, so its peers' neighbour caches stay right.
        // With a random MAC they kept the old one and probed it for tens of seconds, and a new
        // leader could not reach a returning follower.
        let [a, b, c, d] = net.ip.octets();
        let mac = format!("02:70:{a:02x}:{b:02x}:{c:02x}:{d:02x}");
        ip(&["-n", ns, "link", "set", "eth0", "address", &mac]).await?;
        let cidr = format!("{}/24", net.ip);
        ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"]).await?;
        ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
        ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
        Ok(())
    }

    /// Deletes the namespace (which destroys the veth pair) and frees the address.
    pub async fn remove_pod_net(&self, net: &PodNet) {
        kill_namespace_processes(&net.netns).await;
        if let Err(e) = ip(&["netns", "del", &net.netns]).await {
            tracing::debug!(netns = %net.netns, error = %e, "deleting network namespace");
        }
        // The veth normally goes with the namespace; remove it if the namespace never got it.
        let _ = ip(&["link", "del", &net.host_veth]).await;
        if let Some(n) = net.ip.octets().get(3) {
            self.used
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(n);
        }
    }
}

/// SIGKILLs every process in a namespace (leftovers of a crashed kubelet or a stray child).
async fn kill_namespace_processes(ns: &str) {
    let pids = ip(&["netns", "pids", ns]).await.unwrap_or_default();
    for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn subnet_must_be_a_private_slash_24() {
        assert_eq!(
            Network::new("rck0", "10.241.0.0/24").unwrap().gateway(),
            Ipv4Addr::new(10, 241, 0, 1)
        );
        assert!(Network::new("rck0", "10.241.0.0/16").is_err());
        assert!(Network::new("rck0", "8.8.8.0/24").is_err());
        assert!(Network::new("a-very-long-name", "10.241.0.0/24").is_err());
    }
}

//! (I/O: files) Pod DNS without a DNS server: every pod's `/etc/hosts` (bind-mounted from its
//! pod directory) lists the pod itself, the API server's service name at the bridge address, and
//! the stable names `<hostname>.<subdomain>.<namespace>.svc[.cluster.local]` of every pod on this
//! node that has a `subdomain` (StatefulSet pods behind their headless Service), as cluster DNS
//! would resolve them. The files are rewritten in place (same inode) whenever a pod comes or
//! goes, so running processes see the change through their bind mounts.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;

#[derive(Debug, Clone)]
struct Entry {
    pod: String,
    ip: String,
    hostname: String,
    /// Fully qualified names others may resolve, empty without a subdomain.
    stable_names: Vec<String>,
    file: PathBuf,
}

pub struct HostsTable {
    gateway: Ipv4Addr,
    pods: Mutex<BTreeMap<String, Entry>>,
}

impl HostsTable {
    pub fn new(gateway: Ipv4Addr) -> Self {
        HostsTable {
            gateway,
            pods: Mutex::new(BTreeMap::new()),
        }
    }

    /// Registers a pod (by UID) whose hosts file is `file`, and rewrites every hosts file.
    pub fn add(&self, uid: &str, pod: &Pod, ip: &str, file: PathBuf) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let hostname = spec
            .and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| name.clone());
        let stable_names = match spec.and_then(|s| s.subdomain.as_deref()) {
            Some(sub) if !sub.is_empty() => vec![
                format!("{hostname}.{sub}.{ns}.svc.cluster.local"),
                format!("{hostname}.{sub}.{ns}.svc"),
            ],
            _ => Vec::new(),
        };
        let entry = Entry {
            pod: format!("{ns}/{name}"),
            ip: ip.to_owned(),
            hostname,
            stable_names,
            file,
        };
        let mut pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        pods.insert(uid.to_owned(), entry);
        self.publish(&pods);
    }

    pub fn remove(&self, uid: &str) {
        let mut pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        if pods.remove(uid).is_some() {
            self.publish(&pods);
        }
    }

    fn publish(&self, pods: &BTreeMap<String, Entry>) {
        for entry in pods.values() {
            let text = render(entry, pods.values(), self.gateway);
            let written = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&entry.file)
                .and_then(|mut f| f.write_all(text.as_bytes()));
            if let Err(e) = written {
                tracing::warn!(pod = %entry.pod, file = %entry.file.display(), error = %e, "writing hosts file");
            }
        }
    }
}

fn render<'a>(own: &Entry, all: impl Iterator<Item = &'a Entry>, gateway: Ipv4Addr) -> String {
    let mut text = format!(
        "# Written by rc-process-kubelet for pod {}\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        own.pod
    );
    text.push_str(
        &format!(
            "{}\t{} {}\n",
            own.ip,
            own.stable_names.join(" "),
            own.hostname
        )
        .replace("\t ", "\t"),
    );
    text.push_str(&format!(
        "{gateway}\tkubernetes kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local\n"
    ));
    for other in all.filter(|e| e.pod != own.pod && !e.stable_names.is_empty()) {
        text.push_str(&format!("{}\t{}\n", other.ip, other.stable_names.join(" ")));
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, subdomain: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                hostname: Some(name.into()),
                subdomain: subdomain.map(Into::into),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn every_pod_resolves_the_stable_names_of_the_others() {
        let dir = std::env::temp_dir().join(format!("rc-hosts-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let table = HostsTable::new(Ipv4Addr::new(10, 241, 0, 1));
        table.add(
            "u0",
            &pod("orders-0", Some("orders-peers")),
            "10.241.0.2",
            dir.join("h0"),
        );
        table.add(
            "u1",
            &pod("orders-1", Some("orders-peers")),
            "10.241.0.3",
            dir.join("h1"),
        );
        table.add("u2", &pod("operator", None), "10.241.0.4", dir.join("h2"));
        let h0 = std::fs::read_to_string(dir.join("h0")).unwrap();
        assert!(h0.contains("10.241.0.2\torders-0.orders-peers.shop.svc.cluster.local orders-0.orders-peers.shop.svc orders-0\n"));
        assert!(h0.contains("10.241.0.3\torders-1.orders-peers.shop.svc.cluster.local orders-1.orders-peers.shop.svc\n"));
        assert!(h0.contains("10.241.0.1\tkubernetes "));
        let h2 = std::fs::read_to_string(dir.join("h2")).unwrap();
        assert!(h2.contains("10.241.0.4\toperator\n"));
        assert!(h2.contains("orders-1.orders-peers.shop.svc"));
        table.remove("u1");
        let h0 = std::fs::read_to_string(dir.join("h0")).unwrap();
        assert!(!h0.contains("orders-1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

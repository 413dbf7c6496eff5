//! The comparison: a 3-member etcd cluster on this machine, through its JSON gateway.

use crate::prelude::*;

pub fn etcd_bin(arg: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = arg {
        return Ok(p.clone());
    }
    if let Ok(dir) = std::env::var("RC_KUBE_BIN") {
        return Ok(Path::new(&dir).join("etcd"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let cache = Path::new(&home).join(".cache/rc-kube");
        if let Ok(rd) = std::fs::read_dir(&cache) {
            for e in rd.flatten() {
                let p = e.path().join("etcd");
                if p.exists() {
                    return Ok(p);
                }
            }
        }
    }
    Ok(PathBuf::from("etcd"))
}

pub async fn start_etcd(
    http: &reqwest::Client,
    bin: &Path,
) -> anyhow::Result<(Vec<String>, Procs, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let mut ports = Vec::new();
    for _ in 0..3 {
        ports.push((free_port()?, free_port()?));
    }
    let cluster: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("e{i}=http://127.0.0.1:{p}"))
        .collect();
    let mut procs = Procs(Vec::new());
    for (i, (client, peer)) in ports.iter().enumerate() {
        procs.0.push(
            Command::new(bin)
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("e{i}")))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args([
                    "--initial-cluster",
                    &cluster.join(","),
                    "--initial-cluster-state",
                    "new",
                ])
                .args(["--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| {
                    format!(
                        "starting {} (build it with hack/kube/build.sh, or pass --etcd-bin)",
                        bin.display()
                    )
                })?,
        );
    }
    let addrs: Vec<String> = ports
        .iter()
        .map(|(c, _)| format!("127.0.0.1:{c}"))
        .collect();
    for a in &addrs {
        wait_http(http, &format!("http://{a}/health")).await?;
    }
    Ok((addrs, procs, dir))
}

/// Find the etcd leader's client address (the gateway forwards, but the leader avoids a hop).
pub async fn etcd_leader(http: &reqwest::Client, addrs: &[String]) -> String {
    for a in addrs {
        if let Ok(r) = http
            .post(format!("http://{a}/v3/maintenance/status"))
            .json(&json!({}))
            .send()
            .await
        {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                if v["leader"] == v["header"]["member_id"] {
                    return a.clone();
                }
            }
        }
    }
    addrs[0].clone()
}

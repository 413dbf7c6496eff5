//! Local rc-node clusters: three (or more) processes on loopback, promoted or given a ring.

use crate::prelude::*;

pub const TOKEN: &str = "bench-token-0123456789";

pub struct RcCluster {
    pub addrs: Vec<String>,
    pub procs: Procs,
    pub _dir: tempfile::TempDir,
}

/// Start three rc-node processes with `flags` on free loopback ports; wait until they answer.
pub async fn spawn_nodes(http: &reqwest::Client, flags: &[&str]) -> anyhow::Result<RcCluster> {
    spawn_n_nodes(http, 3, flags).await
}

pub async fn spawn_n_nodes(
    http: &reqwest::Client,
    n: usize,
    flags: &[&str],
) -> anyhow::Result<RcCluster> {
    spawn_in(tempfile::tempdir()?, http, "http", n, flags).await
}

/// Start `n` nodes with data and logs in `dir`; wait until `http` gets `/healthz` with `scheme`.
async fn spawn_in(
    dir: tempfile::TempDir,
    http: &reqwest::Client,
    scheme: &str,
    n: usize,
    flags: &[&str],
) -> anyhow::Result<RcCluster> {
    let mut procs = Procs(Vec::new());
    let mut addrs = Vec::new();
    for i in 0..n {
        let addr = format!("127.0.0.1:{}", free_port()?);
        procs.0.push(spawn_node(dir.path(), i, &addr, flags)?);
        addrs.push(addr);
    }
    for a in &addrs {
        wait_http(http, &format!("{scheme}://{a}/healthz")).await?;
    }
    Ok(RcCluster {
        addrs,
        procs,
        _dir: dir,
    })
}

/// Node `n{i}` listening on `addr`, with its data in `dir/n{i}` and its log in `dir/n{i}.log`.
fn spawn_node(
    dir: &Path,
    i: usize,
    addr: &str,
    flags: &[&str],
) -> anyhow::Result<std::process::Child> {
    Ok(Command::new(node_bin()?)
        .args(["--node-id", &format!("n{i}"), "--listen", addr])
        .args(["--admin-token", TOKEN])
        .args(
            (!flags.contains(&"--log-level"))
                .then_some(["--log-level", "warn"])
                .into_iter()
                .flatten(),
        )
        .args(flags)
        .arg("--data-dir")
        .arg(dir.join(format!("n{i}")))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("n{i}.log")))?)
        .spawn()?)
}

impl RcCluster {
    /// Start one more node (plain HTTP) with `flags`, an empty data directory; its index.
    pub async fn add_node(
        &mut self,
        http: &reqwest::Client,
        flags: &[&str],
    ) -> anyhow::Result<usize> {
        let i = self.addrs.len();
        let addr = format!("127.0.0.1:{}", free_port()?);
        self.procs
            .0
            .push(spawn_node(self._dir.path(), i, &addr, flags)?);
        wait_http(http, &format!("http://{addr}/healthz")).await?;
        self.addrs.push(addr);
        Ok(i)
    }
}

pub async fn start_rc(http: &reqwest::Client, replication: &str) -> anyhow::Result<RcCluster> {
    let c = spawn_nodes(http, &["--replication", replication]).await?;
    promote(http, "http", &c.addrs, 0, 1, &[0, 1, 2]).await?;
    Ok(c)
}

/// As [`start_rc`], every node serving TLS (see [`spawn_tls_nodes`]); returns the load target
/// that verifies it.
pub async fn start_rc_tls(replication: &str) -> anyhow::Result<(RcCluster, Target)> {
    let (c, target, http) = spawn_tls_nodes(&["--replication", replication]).await?;
    promote(&http, "https", &c.addrs, 0, 1, &[0, 1, 2]).await?;
    Ok((c, target))
}

/// Three nodes with `flags`, serving TLS with a certificate of a test CA (for `localhost`,
/// checked when nodes dial 127.0.0.1). Returns the load target and an admin client that
/// verify it.
pub async fn spawn_tls_nodes(
    flags: &[&str],
) -> anyhow::Result<(RcCluster, Target, reqwest::Client)> {
    let dir = tempfile::tempdir()?;
    let ca = rc_tls::issue::ClusterCa::generate("rc-bench CA", Duration::from_secs(86_400))?;
    let cert = ca.issue(
        "rc-bench",
        &["localhost".to_owned()],
        &[],
        Duration::from_secs(86_400),
    )?;
    let file = |name: &str, pem: &str| -> anyhow::Result<String> {
        let path = dir.path().join(name);
        std::fs::write(&path, pem)?;
        Ok(path.to_string_lossy().into_owned())
    };
    let (ca_file, cert_file, key_file) = (
        file("ca.crt", &ca.cert_pem)?,
        file("tls.crt", &cert.cert_pem)?,
        file("tls.key", &cert.key_pem)?,
    );
    let tls = Arc::new(rc_tls::client::client_config(
        ca.cert_pem.as_bytes(),
        "localhost",
    )?);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .use_preconfigured_tls((*tls).clone())
        .build()?;
    let mut all = flags.to_vec();
    all.extend([
        "--tls-cert-file",
        &cert_file,
        "--tls-key-file",
        &key_file,
        "--tls-ca-file",
        &ca_file,
    ]);
    let c = spawn_in(dir, &http, "https", 3, &all).await?;
    Ok((c, Target::Rc(Some(tls)), http))
}

/// The operator's failover steps: fence `alive` at `epoch`, promote `leader`, others follow.
pub async fn promote(
    http: &reqwest::Client,
    scheme: &str,
    addrs: &[String],
    leader: usize,
    epoch: u64,
    alive: &[usize],
) -> anyhow::Result<()> {
    for &i in alive {
        http.post(format!("{scheme}://{}/admin/epoch", addrs[i]))
            .bearer_auth(TOKEN)
            .json(&json!({"epoch": epoch}))
            .send()
            .await?;
    }
    let followers: Vec<_> = (0..addrs.len())
        .filter(|j| *j != leader)
        .map(|j| json!({"id": format!("n{j}"), "address": addrs[j]}))
        .collect();
    let r = http
        .post(format!("{scheme}://{}/admin/promote", addrs[leader]))
        .bearer_auth(TOKEN)
        .json(&json!({"epoch": epoch, "followers": followers}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("promote failed: {}", r.text().await?);
    }
    // Wait until the leader serves linearizable reads (its no-op committed).
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let r = http
            .get(format!("{scheme}://{}/v1/kv/warmup", addrs[leader]))
            .send()
            .await?;
        if r.status().as_u16() == 404 || r.status().is_success() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("leader did not become ready")
}

/// Push ring `version` to every node at `addrs`, then wait until each has it and has restored
/// (a node with an empty disk streams its ranges before it serves reads).
pub async fn push_ring(
    http: &reqwest::Client,
    scheme: &str,
    addrs: &[String],
    version: u64,
    members: &[serde_json::Value],
) -> anyhow::Result<()> {
    for a in addrs {
        http.put(format!("{scheme}://{a}/admin/ring"))
            .bearer_auth(TOKEN)
            .json(&json!({"version": version, "members": members}))
            .send()
            .await?
            .error_for_status()?;
    }
    for a in addrs {
        wait_leaderless(http, scheme, a, |s| {
            s.ring_version == version && !s.restoring
        })
        .await?;
    }
    Ok(())
}

/// Poll `/admin/status` of a leaderless node until `check` holds for its leaderless part.
pub async fn wait_leaderless(
    http: &reqwest::Client,
    scheme: &str,
    addr: &str,
    check: impl Fn(&LeaderlessStatus) -> bool,
) -> anyhow::Result<LeaderlessStatus> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if let Ok(r) = http
            .get(format!("{scheme}://{addr}/admin/status"))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            let status = r.json::<NodeStatus>().await.ok();
            if let Some(l) = status.as_ref().and_then(NodeStatus::leaderless) {
                if check(l) {
                    return Ok(l.clone());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{addr}: leaderless status never reached the expected state")
}

//! Processes the benchmark starts (killed by PID on drop), free ports, readiness waits.

use crate::prelude::*;

/// Processes started here; killed by PID on drop.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Procs {
    /// CPU time (user and system, every thread) these processes have used so far, in seconds;
    /// a process that has exited counts as zero.
    pub fn cpu_seconds(&self) -> f64 {
        self.0.iter().map(|c| cpu_seconds(c.id())).sum()
    }
}

/// `utime + stime` from `/proc/<pid>/stat` (fields 14 and 15, counted after the command name,
/// which may hold spaces), in USER_HZ ticks: 100 per second in Linux's ABI.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, after_name)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (tick(11) + tick(12)) as f64 / 100.0
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub async fn wait_http(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} did not answer within 20 s")
}

pub fn node_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.join("rc-node");
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p rc-node`",
            bin.display()
        );
    }
    Ok(bin)
}
